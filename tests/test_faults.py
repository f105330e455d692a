"""Kills and concurrency against the real command-line tools (`make test-faults`).

Each case runs a tool in its own process, kills or races it, and checks: no process left
behind, no half-written or mixed output, a clear message and exit code, and that the next
run works.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import mxnet as mx
import pytest

from insightface_align.processes import process_alive

pytestmark = pytest.mark.faults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
NUM_FACES = 160  # faces packed by each case


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A folder of NUM_FACES rendered 2D faces (.jpg + .pts)."""
    from insightface_align.synthetic.dataset import generate_folder
    from insightface_align.synthetic.generate import SynthConfig

    out = tmp_path_factory.mktemp("faults") / "raw"
    generate_folder(str(out), NUM_FACES, seed=5, config=SynthConfig(mode="2d", size=192), workers=2)
    return str(out)


@pytest.fixture(scope="module")
def stuck_faces(faces, tmp_path_factory):
    """The faces plus a last one whose label file is a FIFO nobody writes: the worker that
    opens it blocks, so a packer of this folder is always mid-pack when it is signalled."""
    out = tmp_path_factory.mktemp("stuck") / "raw"
    shutil.copytree(faces, out)
    shutil.copy(out / "synth_000000.jpg", out / "zz_stuck.jpg")
    os.mkfifo(out / "zz_stuck.pts")
    return str(out)


def descendants(pid: int) -> set:
    """Every process started under `pid`, including pool workers re-parented to a forkserver
    the tool started (found through the forkserver, a child of `pid`)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, set()).add(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_gone(pids, timeout=8.0):
    end = time.time() + timeout
    while time.time() < end:
        alive = [p for p in pids if process_alive(p)]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


def pack_cmd(faces, out, name="t", workers=2):
    return [sys.executable, "-m", "insightface_align", "pack", "--format", "300w", "--input", faces, "--output",
            str(out), "--name", name, "--workers", str(workers), "--no-progress"]


def default_sigint() -> None:
    """Ctrl-C as at a terminal: a test run started in the background of a non-interactive
    shell inherits SIGINT ignored, and Python then leaves it ignored in the packer."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_mid_pack(cmd, out, timeout=60.0):
    """Start a packer and return (process, its descendants) once its staging folder and its
    pool processes exist."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=default_sigint)
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        staged = out.exists() and [n for n in os.listdir(out) if n.startswith(".t.pack-")]
        if staged and len(descendants(proc.pid)) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the packer finished ({proc.returncode}) before it could be caught mid-pack"
    return proc, descendants(proc.pid)


def reader_is_blocked(fifo: str, timeout: float = 60.0) -> int:
    """Wait until a worker has the FIFO open for reading, and return a write end that is
    held open without writing, so that worker stays blocked in its read."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody reads it yet
            time.sleep(0.01)
    raise AssertionError(f"no worker opened {fifo} within {timeout} s")


def read_all(rec):
    """Every record of a set through its index: a mixed or torn set fails here."""
    reader = mx.recordio.MXIndexedRecordIO(rec[:-4] + ".idx", rec, "r")
    try:
        for key in reader.keys:
            header, _ = mx.recordio.unpack(reader.read_idx(key))
            assert header.id == key
        return len(reader.keys)
    finally:
        reader.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_killed_packer_leaves_no_process_and_no_mixed_set(faces, stuck_faces, tmp_path, sig):
    """The packer is stopped while one worker can never finish its chunk (stuck_faces): it
    must end at once all the same, its workers with it, and keep the old set."""
    out = tmp_path / "out"
    assert subprocess.run(pack_cmd(faces, out, workers=1), env=ENV, capture_output=True).returncode == 0
    before = {n: (out / n).read_bytes() for n in ("t.rec", "t.idx", "t.lst")}
    proc, seen = start_mid_pack(pack_cmd(stuck_faces, out), out)
    writer = reader_is_blocked(os.path.join(stuck_faces, "zz_stuck.pts"))
    try:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(writer)
    assert proc.returncode != 0
    assert "Traceback" not in err, err
    assert wait_gone(seen) == [], "left running"
    # The old set is intact, whole: never a mix of old and new files.
    after = {n: (out / n).read_bytes() for n in before}
    assert after == before
    assert read_all(str(out / "t.rec")) == NUM_FACES
    rerun = subprocess.run(pack_cmd(faces, out), env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not [n for n in os.listdir(out) if n.startswith(".t.pack-")]


def test_two_packers_racing_on_one_set(faces, tmp_path):
    """The first packer is frozen (SIGSTOP) while it holds the set, so the second always meets it."""
    out = tmp_path / "out"
    first = subprocess.Popen(pack_cmd(faces, out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.time() + 60
    while time.time() < end and not (out.exists() and [n for n in os.listdir(out) if n.startswith(".t.pack-")]):
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = subprocess.run(pack_cmd(faces, out), env=ENV, capture_output=True, text=True, timeout=120)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stderr
    assert "another pack" in second.stderr and "Traceback" not in second.stderr
    assert read_all(str(out / "t.rec")) == NUM_FACES


def test_demo_stopped_during_training_exits_without_exporting(faces, tmp_path):
    data = tmp_path / "data"
    for split in ("train", "test"):
        assert subprocess.run(pack_cmd(faces, data, name=split), env=ENV, capture_output=True).returncode == 0
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "insightface_align", "demo", "--out", str(out), "--data", str(data), "--steps", "400",
           "--workers", "0", "--batch", "4"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "train" / "train_log.jsonl"
    end = time.time() + 120
    while time.time() < end and not (log.exists() and log.stat().st_size):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (stdout, err)
    assert "stopped by a signal at step" in err and "Traceback" not in err
    assert not (out / "deploy-symbol.json").exists() and not (out / "report.md").exists()
    step = int(open(out / "train" / "model-latest.json").read().split(":")[1].strip(" }\n"))
    assert os.path.exists(out / "train" / ("model-%04d.params" % step))
