#!/usr/bin/env python
"""dlib's 68-point shape predictor as a benchmark gauge (runs in .venv-dlib: make dlib-gauge).

Reads JSON lines {"image": path, "box": [x0, y0, x1, y1]} on stdin and writes
{"points": [[x, y] x 68]} lines (0-based pixel centres). The predictor's model ships in
the face-recognition-models package; its licence forbids commercial use, so it is a
reference for tools/real_faces.py only, never a dependency of the project.
"""
import json
import os
import sys

import dlib
import face_recognition_models


def main() -> int:
    model = os.path.join(os.path.dirname(face_recognition_models.__file__), "models",
                         "shape_predictor_68_face_landmarks.dat")
    predictor = dlib.shape_predictor(model)
    images = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        path = request["image"]
        if path not in images:
            images[path] = dlib.load_rgb_image(path)
        x0, y0, x1, y1 = (int(round(v)) for v in request["box"])
        shape = predictor(images[path], dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        print(json.dumps({"points": [[shape.part(i).x, shape.part(i).y] for i in range(68)]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
