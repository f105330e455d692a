"""`pip install` of a built wheel works without the repository: the command, the recipes,
the bundled model and the compiled operators all come from the installed package.

The fresh venv sees the pinned third-party packages through a .pth line pointing at this
environment's site-packages (a path line only: .pth files there, including the
checkout's editable entry, are not processed), and it runs from an empty folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import cv2
import pytest

from conftest import ROOT


def _run(cmd, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv bin folder, clean environment) with the wheel installed."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    files = _run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for name in filter(None, files):
        if not (ROOT / name).is_file():
            continue
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    wheels = base / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, source])
    (wheel,) = wheels.glob("insightface_align-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(site, "pinned.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_CACHE_HOME"] = str(base / "cache")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], env=env)
    return python, venv / "bin", env, base


def test_wheel_holds_package_data_and_no_generic_top_level(installed):
    python, _, env, base = installed
    code = ("import insightface_align, os, json; d = os.path.dirname(insightface_align.__file__); "
            "print(json.dumps([d, sorted(os.listdir(os.path.join(d, 'recipes')))]))")
    where, recipes = json.loads(_run([python, "-c", code], env=env, cwd=base).stdout)
    assert not where.startswith(str(ROOT)), "imported the checkout, not the installed package"
    assert "sdu-2d.yaml" in recipes and "bundled-2d.yaml" in recipes
    site = Path(where).parent
    assert not (site / "symbols").exists()
    record = next(site.glob("insightface_align-*.dist-info"))
    assert (record / "top_level.txt").read_text().split() == ["insightface_align"]
    meta = (record / "METADATA").read_text()
    for field in ("License: MIT", "Home-page: ", "Requires-Dist: numpy", "Requires-Dist: opencv-python-headless",
                  "Provides-Extra: cpu"):
        assert field in meta, field


def test_installed_command_runs_stats_and_predict(installed, tmp_path):
    python, bin_dir, env, base = installed
    stats = _run([bin_dir / "insightface-align", "stats", "--no-latency", "--recipes", "sdu-2d", "--json"],
                 env=env, cwd=tmp_path)
    rows = [json.loads(line) for line in stats.stdout.splitlines() if line.strip()]
    assert len(rows) == 1 and rows[0]["recipe"] == "sdu-2d", rows

    from insightface_align.synthetic import SynthConfig, make_face

    face = make_face(7, 0, SynthConfig(mode="2d", occlusion_prob=0.0))
    cv2.imwrite(str(tmp_path / "face.jpg"), face.image)
    x0, y0 = face.points[:, :2].min(axis=0)
    x1, y1 = face.points[:, :2].max(axis=0)
    _run([python, "-m", "insightface_align", "predict", "face.jpg", "--out", "out",
          "--box", f"{x0:.1f},{y0:.1f},{x1:.1f},{y1:.1f}"], env=env, cwd=tmp_path)
    record = json.loads((tmp_path / "out" / "face.json").read_text())
    assert record["model"]["name"] == "bundled-2d"
    assert not record["model"]["prefix"].startswith(str(ROOT))
    assert len(record["faces"]) == 1 and len(record["faces"][0]["points"]) == 68
