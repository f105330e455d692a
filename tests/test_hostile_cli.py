"""Careless and hostile command lines, one table per tool: each case must end with its
exact exit code and a one-line `error: ...` naming the file or option at fault, never a
traceback, and must write nothing. Runs every tool in-process through the
`insightface-align` entry point (argparse's own usage errors exit 2 too).
"""
import json
import os
import struct

import mxnet as mx
import numpy as np
import pytest

from insightface_align.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED = os.path.join(ROOT, "insightface_align", "models", "bundled-2d", "model")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Named hostile files the cases refer to as {name}."""
    d = tmp_path_factory.mktemp("hostile")
    f = {"tmp": str(d)}
    (d / "file").write_text("not a folder")
    f["file"] = str(d / "file")
    (d / "empty").mkdir()
    f["empty"] = str(d / "empty")
    (d / "text.rec").write_text("hello")
    (d / "text.idx").write_text("0\t0\n")
    f["textrec"] = str(d / "text.rec")
    (d / "garbage.yaml").write_text("network: [unclosed\n")
    f["badyaml"] = str(d / "garbage.yaml")
    (d / "section.yaml").write_text("base: demo\nnetwork: {}\nextra: {a: 1}\n")
    f["badsection"] = str(d / "section.yaml")
    (d / "typed.yaml").write_text("base: demo\ntrain: {lr: fast}\n")
    f["badtype"] = str(d / "typed.yaml")
    # Checkpoints: garbage symbol, truncated parameters, one wrongly shaped tensor.
    for name in ("junk", "cut", "shape"):
        os.makedirs(d / name)
    (d / "junk" / "m-symbol.json").write_text("{ this is not json")
    (d / "junk" / "m-0000.params").write_bytes(b"\x00" * 64)
    f["junk"] = str(d / "junk" / "m")
    for name in ("cut", "shape"):
        for ext in ("-symbol.json", "-0000.json"):
            with open(BUNDLED + ext, "rb") as src, open(str(d / name / "m") + ext, "wb") as dst:
                dst.write(src.read())
    blob = open(BUNDLED + "-0000.params", "rb").read()
    (d / "cut" / "m-0000.params").write_bytes(blob[:len(blob) // 3])
    f["cut"] = str(d / "cut" / "m")
    params = mx.nd.load(BUNDLED + "-0000.params")
    params["arg:conv0_weight"] = mx.nd.zeros((3, 3, 3, 3))
    mx.nd.save(str(d / "shape" / "m-0000.params"), params)
    f["shape"] = str(d / "shape" / "m")
    f["nockpt"] = str(d / "nothing" / "m")
    # An image and a tiny 300-W folder with one bad .pts.
    import cv2

    cv2.imwrite(str(d / "face.png"), np.full((64, 64, 3), 128, np.uint8))
    f["image"] = str(d / "face.png")
    (d / "w300").mkdir()
    cv2.imwrite(str(d / "w300" / "a.png"), np.full((64, 64, 3), 128, np.uint8))
    (d / "w300" / "a.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    f["w300"] = str(d / "w300")
    from insightface_align.data.testing import random_face, write_release_rec

    (d / "data").mkdir()
    rng = np.random.default_rng(0)
    write_release_rec(str(d / "data" / "train"), [random_face(rng) for _ in range(4)])
    f["data"] = str(d / "data")
    (d / "run").mkdir()
    (d / "run" / "model-latest.json").write_text(json.dumps({"step": 2}))
    (d / "run" / "model-0002.params").write_bytes(blob[:100])
    (d / "run" / "model-0002.json").write_text("{}")
    f["run"] = str(d / "run")
    return f


def ids(cases):
    return [c[0] for c in cases]


# (id, argv, exit code, fragment of stderr); {name} refers to the `files` fixture.
CASES = [
    # top level
    ("no-command", [], 2, "usage: insightface-align COMMAND"),
    ("unknown-command", ["frobnicate"], 2, "unknown command 'frobnicate'"),
    # predict
    ("predict-nothing", ["predict"], 2, "the following arguments are required"),
    ("predict-missing-image", ["predict", "{tmp}/nope.jpg"], 2, "nope.jpg"),
    ("predict-empty-folder", ["predict", "{empty}"], 2, "{empty}"),
    ("predict-box-3-values", ["predict", "{image}", "--box", "1,2,3"], 2, "--box '1,2,3'"),
    ("predict-box-nan", ["predict", "{image}", "--box", "nan,0,10,10"], 2, "--box 'nan,0,10,10'"),
    ("predict-box-inverted", ["predict", "{image}", "--box", "10,10,5,5"], 2, "x1 > x0"),
    ("predict-box-text", ["predict", "{image}", "--box", "a,b,c,d"], 2, "--box 'a,b,c,d'"),
    ("predict-out-is-file", ["predict", "{image}", "--out", "{file}"], 2, "{file}: --out exists and is not a folder"),
    ("predict-out-under-file", ["predict", "{image}", "--out", "{file}/sub"], 2, "which is a file"),
    ("predict-bad-format", ["predict", "{image}", "--format", "xml"], 2, "invalid choice: 'xml'"),
    ("predict-bad-decoder", ["predict", "{image}", "--decoder", "magic"], 2, "invalid choice: 'magic'"),
    ("predict-missing-checkpoint", ["predict", "{image}", "--prefix", "{nockpt}"], 2, "{nockpt}"),
    ("predict-garbage-symbol", ["predict", "{image}", "--prefix", "{junk}"], 2, "{junk}-symbol.json"),
    ("predict-truncated-params", ["predict", "{image}", "--prefix", "{cut}"], 2, "{cut}-0000.params"),
    ("predict-wrong-tensor-shape", ["predict", "{image}", "--prefix", "{shape}"], 2, "tensor conv0_weight has shape"),
    # pack
    ("pack-nothing", ["pack"], 2, "required"),
    ("pack-format-without-name", ["pack", "--format", "300w", "--input", "{w300}", "--output", "{tmp}/o"], 2,
     "--name is required with --format"),
    ("pack-unknown-format", ["pack", "--format", "xyz", "--input", "{w300}", "--output", "{tmp}/o", "--name", "t"], 2,
     "invalid choice: 'xyz'"),
    ("pack-missing-input", ["pack", "--format", "300w", "--input", "{tmp}/none", "--output", "{tmp}/o", "--name",
                            "t"], 2, "{tmp}/none"),
    ("pack-output-is-file", ["pack", "--format", "300w", "--input", "{w300}", "--output", "{file}", "--name", "t"], 2,
     "{file}: --output exists and is not a folder"),
    ("pack-output-under-file", ["pack", "--format", "300w", "--input", "{w300}", "--output", "{file}/x", "--name",
                                "t"], 2, "which is a file"),
    ("pack-quality-0", ["pack", "--format", "300w", "--input", "{w300}", "--output", "{tmp}/o", "--name", "t",
                        "--quality", "0"], 2, "--quality must be in 1..100"),
    ("pack-quality-101", ["pack", "--format", "300w", "--input", "{w300}", "--output", "{tmp}/o", "--name", "t",
                          "--quality", "101"], 2, "--quality must be in 1..100"),
    ("pack-auto-two-inputs", ["pack", "--auto", "2d", "--input", "{w300}", "{empty}", "--output", "{tmp}/o"], 2,
     "--auto takes one data folder"),
    ("pack-only-bad-items", ["pack", "--format", "300w", "--input", "{w300}", "--output", "{tmp}/o", "--name", "t",
                             "--workers", "1", "--no-progress"], 2, "first: {w300}/a.pts"),
    ("pack-name-with-slash", ["pack", "--format", "300w", "--input", "{w300}", "--output", "{tmp}/o", "--name",
                              "a/b", "--workers", "1"], 2, "invalid set name 'a/b'"),
    ("pack-bad-convention", ["pack", "--format", "300w", "--input", "{w300}", "--output", "{tmp}/o", "--name", "t",
                             "--convention", "left"], 2, "invalid choice: 'left'"),
    # synth
    ("synth-count-0", ["synth", "--mode", "2d", "--out", "{tmp}/s", "--count", "0"], 2, "--count"),
    ("synth-occlusion-2", ["synth", "--mode", "2d", "--out", "{tmp}/s", "--count", "1", "--occlusion-prob", "2"], 2,
     "--occlusion-prob must be in [0, 1]"),
    ("synth-mode-4d", ["synth", "--mode", "4d", "--out", "{tmp}/s"], 2, "invalid choice: '4d'"),
    ("synth-out-is-file", ["synth", "--mode", "2d", "--out", "{file}", "--count", "1"], 2, "{file}"),
    # train
    ("train-unknown-recipe", ["train", "--recipe", "no-such-recipe", "--data", "{empty}"], 2, "no-such-recipe"),
    ("train-garbage-recipe", ["train", "--recipe", "{badyaml}", "--data", "{empty}"], 2, "{badyaml}"),
    ("train-unknown-section", ["train", "--recipe", "{badsection}", "--data", "{empty}"], 2, "extra"),
    ("train-typed-value", ["train", "--recipe", "{badtype}", "--data", "{empty}"], 2, "train.lr"),
    ("train-missing-data", ["train", "--recipe", "demo", "--data", "{tmp}/none"], 2, "{tmp}/none"),
    ("train-data-without-rec", ["train", "--recipe", "demo", "--data", "{empty}"], 2, "train.rec"),
    ("train-negative-lr", ["train", "--recipe", "demo", "--data", "{empty}", "--lr", "-1"], 2, "lr"),
    ("train-zero-steps", ["train", "--recipe", "demo", "--data", "{empty}", "--max-steps", "0"], 2, "max_steps"),
    ("train-pretrained-no-epoch", ["train", "--recipe", "demo", "--data", "{data}", "--pretrained", "{junk}"], 2,
     "--pretrained"),
    ("train-pretrained-garbage", ["train", "--recipe", "demo", "--data", "{data}", "--pretrained", "{junk},0"], 2,
     "{junk}"),
    ("train-resume-truncated", ["train", "--recipe", "demo", "--data", "{data}", "--out", "{run}", "--resume"], 2,
     "no intact checkpoint to resume from"),
    # test-nme
    ("test-nme-no-sets", ["test-nme", "--prefix", BUNDLED, "--epoch", "0"], 2, "give --rec and/or --dataset"),
    ("test-nme-missing-rec", ["test-nme", "--prefix", BUNDLED, "--epoch", "0", "--rec", "{tmp}/no.rec"], 2,
     "{tmp}/no.rec"),
    ("test-nme-text-rec", ["test-nme", "--prefix", BUNDLED, "--epoch", "0", "--rec", "{textrec}"], 2, "{textrec}"),
    ("test-nme-out-is-file", ["test-nme", "--prefix", BUNDLED, "--epoch", "0", "--rec", "{textrec}", "--out",
                              "{file}"], 2, "{file}: --out exists and is not a folder"),
    ("test-nme-release-decoder", ["test-nme", "--prefix", BUNDLED, "--epoch", "0", "--rec", "{textrec}",
                                  "--protocol", "release", "--decoder", "argmax"], 2,
     "--decoder cannot be used with --protocol release"),
    ("test-nme-release-normaliser", ["test-nme", "--prefix", BUNDLED, "--epoch", "0", "--rec", "{textrec}",
                                     "--protocol", "release", "--normaliser", "pupils"], 2,
     "--normaliser cannot be used with --protocol release"),
    ("test-nme-landmark-type-paper", ["test-nme", "--prefix", BUNDLED, "--epoch", "0", "--rec", "{textrec}",
                                      "--landmark-type", "3d"], 2, "--landmark-type applies to --protocol release"),
    ("test-nme-batch-0", ["test-nme", "--prefix", BUNDLED, "--epoch", "0", "--rec", "{textrec}", "--batch-size",
                          "0"], 2, "--batch-size must be at least 1"),
    ("test-nme-missing-checkpoint", ["test-nme", "--prefix", "{nockpt}", "--epoch", "0", "--rec", "{textrec}"], 2,
     "{nockpt}"),
    ("test-nme-wrong-tensor-shape", ["test-nme", "--prefix", "{shape}", "--epoch", "0", "--rec", "{textrec}"], 2,
     "tensor conv0_weight has shape"),
    ("test-nme-dataset-no-colon", ["test-nme", "--prefix", BUNDLED, "--epoch", "0", "--dataset", "{w300}"], 2,
     "expected FORMAT:PATH"),
    # export
    ("export-int8-no-calib", ["export", "--prefix", BUNDLED, "--epoch", "0", "--out", "{tmp}/e/d", "--int8"], 2,
     "--int8 needs --calib-rec"),
    ("export-out-under-file", ["export", "--prefix", BUNDLED, "--epoch", "0", "--out", "{file}/d"], 2,
     "{file}: the folder of --out exists and is not a folder"),
    ("export-missing-params", ["export", "--prefix", "{nockpt}", "--epoch", "0", "--out", "{tmp}/e/d"], 2,
     "{nockpt}"),
    ("export-garbage-symbol", ["export", "--prefix", "{junk}", "--epoch", "0", "--out", "{tmp}/e/d"], 2,
     "{junk}"),
    ("export-truncated-params", ["export", "--prefix", "{cut}", "--epoch", "0", "--out", "{tmp}/e/d"], 2,
     "{cut}-0000.params"),
    ("export-wrong-tensor-shape", ["export", "--prefix", "{shape}", "--epoch", "0", "--out", "{tmp}/e/d"], 2,
     "tensor conv0_weight has shape (3, 3, 3, 3)"),
    ("export-bad-dcn-impl", ["export", "--prefix", BUNDLED, "--epoch", "0", "--out", "{tmp}/e/d", "--dcn-impl",
                             "turbo"], 2, "invalid choice: 'turbo'"),
    # stats
    ("stats-unknown-recipe", ["stats", "--recipes", "no-such-recipe"], 2, "no-such-recipe"),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_hostile_command_line(files, case, capsys):
    name, argv, code, fragment = case
    argv = [a.format(**files) for a in argv]
    before = set(os.listdir(files["tmp"]))
    try:
        got = cli_main(argv)
    except SystemExit as exc:  # argparse's usage errors
        got = exc.code
    out, err = capsys.readouterr()
    assert got == code, (name, got, out, err)
    text = err if code else out
    assert fragment.format(**files) in text, (name, text)
    assert "Traceback" not in err
    if code == 2 and not name.startswith(("no-command", "unknown")):
        assert "error" in err
    # Nothing new in the scratch folder (caches and staging folders included).
    assert set(os.listdir(files["tmp"])) - before <= {"o"}, (name, set(os.listdir(files["tmp"])) - before)
