"""AlignIter: release-layout reading, validation crops, determinism, shards, resume, workers."""
import gc
import logging
import multiprocessing as mp
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import cv2
import mxnet as mx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insightface_align.data.config import DataConfig
from insightface_align.data.iterator import AlignIter
from insightface_align.data.recfile import RecordFile
from insightface_align.data.testing import random_face, release_record_bytes
from insightface_align.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_rec_by_hand(prefix, samples):
    """The release layout spelled out: IRHeader 'IfQQ' (flag = 136 labels), 136 float32
    (y, x per point), JPEG bytes; framed by MXIndexedRecordIO.write_idx."""
    writer = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    for i, (img, pts) in enumerate(samples):
        jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        yx = np.asarray(pts, dtype=np.float32)[:, ::-1].reshape(-1)
        buf = struct.pack("IfQQ", 136, 0.0, 1000 + i, 0) + yx.tobytes() + jpeg
        # Same bytes as MXNet's own packer and as our helper.
        assert buf == mx.recordio.pack(mx.recordio.IRHeader(0, yx, 1000 + i, 0), jpeg)
        assert buf == release_record_bytes(1000 + i, jpeg, pts)
        writer.write_idx(i, buf)
    writer.close()
    return prefix + ".rec"


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(7)
    return [random_face(rng) for _ in range(12)]


@pytest.fixture(scope="module")
def rec12(tmp_path_factory, faces):
    return write_rec_by_hand(str(tmp_path_factory.mktemp("rec") / "faces"), faces)


def to_crop(pts, side=256.0):
    """Record pixels -> 128 input pixels for a validation window of `side` record pixels."""
    return (np.asarray(pts, np.float64) - 191.5) * 128.0 / side + 63.5


@pytest.mark.parametrize("mode", ["heatmap", "coords"])
def test_validation_round_trip_points_within_half_pixel(rec12, faces, mode):
    cfg = DataConfig(batch_size=5, train=False, shuffle=False, last_batch="pad", label_mode=mode, sigma=1.0)
    it = AlignIter(rec12, cfg)
    assert it.num_batches == 3
    seen = 0
    for b in it:
        real = 5 - b.pad
        label = b.label[0].asnumpy()
        for row in range(real):
            i = int(b.record_id[row]) - 1000
            want = to_crop(faces[i][1])
            assert np.abs(b.points[row] - want).max() < 0.5
            want_hm = (want + 0.5) * 0.5 - 0.5
            if mode == "coords":
                assert np.abs(label[row] - want_hm).max() < 0.25
            else:
                peaks = label[row].reshape(68, -1).argmax(axis=1)
                got = np.stack([peaks % 64, peaks // 64], axis=1)
                assert np.abs(got - want_hm).max() <= 0.5 + 0.26
            seen += 1
    assert b.pad == 3 and seen == 12
    it.close()


def test_validation_image_is_the_downscaled_window(tmp_path, faces):
    img = np.zeros((384, 384, 3), np.uint8)
    img[64:320, 64:320] = (0, 0, 255)          # the 256 window in red (BGR)
    rec = write_rec_by_hand(str(tmp_path / "win"), [(img, faces[0][1])])
    it = AlignIter(rec, DataConfig(batch_size=1, train=False))
    d = it.next().data[0].asnumpy()[0]
    it.close()
    assert d[0, 2:-2, 2:-2].min() > 240 and d[2, 2:-2, 2:-2].max() < 15   # RGB order, red fills the crop


def test_widen_and_retry_is_counted_and_logged(tmp_path, faces, caplog):
    base = faces[0][1].copy()
    near = base.copy()
    near[0] = [191.5 + 140.0, 191.5]     # outside 256, inside after two 20 px steps (side 296)
    far = base.copy()
    far[0] = [191.5 + 200.0, 191.5]      # outside even after 5 steps (side 356)
    img = faces[0][0]
    rec = write_rec_by_hand(str(tmp_path / "wide"), [(img, base), (img, near), (img, far)])
    it = AlignIter(rec, DataConfig(batch_size=3, train=False, shuffle=False))
    with caplog.at_level(logging.INFO, logger="insightface_align.data.iterator"):
        b = it.next()
        with pytest.raises(StopIteration):
            it.next()
    assert (it.widened, it.still_outside, it.samples_seen) == (2, 1, 3)
    assert "2 of 3 samples needed a wider window" in caplog.text
    np.testing.assert_allclose(b.points[0], to_crop(base), atol=0.5)
    np.testing.assert_allclose(b.points[1], to_crop(near, 296.0), atol=0.5)
    np.testing.assert_allclose(b.points[2], to_crop(far, 356.0), atol=0.5)
    assert b.points[1].max() < 127.5 and b.points[2].max() > 127.5
    hm = b.label[0].asnumpy()
    assert not hm[2, 0].any() and hm[2, 1].max() > 0.5     # off-crop point: all-zero heatmap
    it.close()


def collect(it, epochs=2):
    out = []
    for _ in range(epochs):
        for b in it:
            out.append([b.data[0].asnumpy()] + [lab.asnumpy() for lab in b.label] + [b.record_id])
        it.reset()
    return out


def test_same_seed_same_batches_with_0_and_2_workers(rec12):
    cfg = DataConfig(batch_size=4, pairs="both", seed=11, num_workers=0)
    with AlignIter(rec12, cfg) as a:
        ref = collect(a)
    with AlignIter(rec12, cfg.replace(num_workers=2, prefetch=2)) as b:
        got = collect(b)
    assert len(ref) == len(got) == 12
    for x, y in zip(ref, got):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(ref[0][-1], ref[6][-1]) or not np.array_equal(ref[0][0], ref[6][0])
    with AlignIter(rec12, cfg.replace(seed=12)) as c:
        other = collect(c, 1)
    assert not np.array_equal(other[0][0], ref[0][0])


def test_resume_with_epoch_and_skip_batches(rec12):
    cfg = DataConfig(batch_size=4, seed=5)
    with AlignIter(rec12, cfg) as a:
        full = collect(a, 2)[3:]              # epoch 1 = batches 3..5
    with AlignIter(rec12, cfg.replace(epoch=1, skip_batches=1)) as b:
        b.reset()                             # a reset before any batch keeps the start point
        assert b.epoch == 1 and b.batches_done == 1
        resumed = [x.data[0].asnumpy() for x in b]
    assert len(resumed) == 2
    for x, y in zip(full[1:], resumed):
        np.testing.assert_array_equal(x[0], y)
    with AlignIter(rec12, cfg.replace(epoch=1, skip_batches=3)) as c:   # saved at the epoch's end
        assert list(c) == []
        c.reset()
        assert c.epoch == 2 and len(list(c)) == 3


def test_shards_are_disjoint_and_cover_every_record(rec12):
    ids = []
    for k in range(3):
        cfg = DataConfig(batch_size=3, shard=(k, 3), last_batch="pad", seed=2, epoch=4)
        with AlignIter(rec12, cfg) as it:
            mine = [rid for b in it for rid in b.record_id[:3 - b.pad]]
        ids.append(set(mine))
        assert len(mine) == len(set(mine)) == 4
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set.union(*ids) == set(range(1000, 1012))


def test_reader_reassembles_payloads_split_at_magic_words(tmp_path):
    magic = struct.pack("<I", 0xCED7230A)
    payloads = [b"ab" * 2 + magic + b"xyz", magic * 3, b"", b"q" * 13 + magic, b"1234" + magic + b"5678" + magic]
    w = mx.recordio.MXIndexedRecordIO(str(tmp_path / "m.idx"), str(tmp_path / "m.rec"), "w")
    for i, p in enumerate(payloads):
        w.write_idx(i, p)
    w.close()
    rf = RecordFile(str(tmp_path / "m.rec"))
    assert [rf.read(i) for i in range(len(payloads))] == payloads


def test_bad_record_is_skipped_and_counted(tmp_path, faces):
    prefix = str(tmp_path / "bad")
    write_rec_by_hand(prefix, faces[:3])
    w = mx.recordio.MXIndexedRecordIO(prefix + "2.idx", prefix + "2.rec", "w")
    r = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "r")
    for i in range(3):
        buf = r.read_idx(i)
        w.write_idx(i, buf[:24 + 544] + b"not a jpeg" if i == 1 else buf)
    w.close()
    r.close()
    cfg = DataConfig(batch_size=3, train=False, shuffle=False)
    with AlignIter(prefix + "2.rec", cfg) as it:
        b = it.next()
        assert it.bad_records == 1 and b.record_id.tolist() == [1000, 1002, 1002]
    with AlignIter(prefix + "2.rec", cfg.replace(skip_bad_records=False, num_workers=1)) as it:
        pids = it.worker_pids
        with pytest.raises(DataError, match=r"bad2\.rec.*record key 1.*JPEG"):
            it.next()
        assert_gone(pids)


def zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def assert_gone(pids, timeout=5.0):
    """Every pid has exited (and been reaped): os.kill(pid, 0) fails."""
    deadline = time.time() + timeout
    for pid in pids:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if zombie(pid):   # exited; an orphan waits for a reaper that a container may lack
                break
            assert time.time() < deadline, f"worker {pid} still alive"
            time.sleep(0.05)
    assert not [p for p in mp.active_children() if p.pid in pids]


def test_workers_exit_on_close_and_on_garbage_collection(rec12):
    it = AlignIter(rec12, DataConfig(batch_size=4, num_workers=2))
    it.next()
    pids = it.worker_pids
    assert len(pids) == 2 and all(p.pid in pids for p in mp.active_children() if p.name.startswith("align"))
    it.close()
    assert_gone(pids)
    with pytest.raises(RuntimeError, match="closed"):
        it.next()
    it = AlignIter(rec12, DataConfig(batch_size=4, num_workers=2))
    it.next()
    pids = it.worker_pids
    del it
    gc.collect()
    assert_gone(pids)


def test_workers_exit_when_the_parent_is_interrupted(rec12, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from insightface_align.data.config import DataConfig
        from insightface_align.data.iterator import AlignIter
        it = AlignIter({rec12!r}, DataConfig(batch_size=4, num_workers=2))
        it.next()
        print(*it.worker_pids, flush=True)
        # Ctrl-C reaches Python code as KeyboardInterrupt; raised directly because a self-sent
        # SIGINT was once never acted on by the interpreter in a full `make test` (the test hung).
        raise KeyboardInterrupt
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert "KeyboardInterrupt" in proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    assert_gone(pids)


def test_workers_exit_when_the_parent_is_killed(rec12):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        from insightface_align.data.config import DataConfig
        from insightface_align.data.iterator import AlignIter
        it = AlignIter({rec12!r}, DataConfig(batch_size=4, num_workers=2))
        it.next()
        print(*it.worker_pids, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)   # no cleanup code runs
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == -signal.SIGKILL
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    assert_gone(pids)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_files_raise_only_data_errors(tmp_path_factory, rec12, data):
    rec_bytes = open(rec12, "rb").read()
    idx_text = open(rec12[:-4] + ".idx", "rb").read()
    kind = data.draw(st.sampled_from(["truncate_rec", "flip_rec", "random_idx", "truncate_idx", "garbage_rec"]))
    if kind == "truncate_rec":
        rec_bytes = rec_bytes[:data.draw(st.integers(0, len(rec_bytes)))]
    elif kind == "flip_rec":
        pos = data.draw(st.lists(st.integers(0, len(rec_bytes) - 1), min_size=1, max_size=8))
        arr = bytearray(rec_bytes)
        for p in pos:
            arr[p] ^= data.draw(st.integers(1, 255))
        rec_bytes = bytes(arr)
    elif kind == "random_idx":
        idx_text = data.draw(st.binary(max_size=200))
    elif kind == "truncate_idx":
        idx_text = idx_text[:data.draw(st.integers(0, len(idx_text)))]
    else:
        rec_bytes = data.draw(st.binary(min_size=0, max_size=2000))
    d = tmp_path_factory.mktemp("fuzz")
    (d / "f.rec").write_bytes(rec_bytes)
    (d / "f.idx").write_bytes(idx_text)
    try:
        rf = RecordFile(str(d / "f.rec"))
        for i in range(len(rf)):
            try:
                rf.read_sample(i)
            except DataError as exc:
                assert "f.rec" in str(exc)
        with AlignIter(str(d / "f.rec"), DataConfig(batch_size=2, train=False, shuffle=False)) as it:
            for _ in it:
                pass
    except DataError as exc:
        assert "f.rec" in str(exc) or "f.idx" in str(exc)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_stay_valid_for_the_next_fetch_and_copies_for_ever(rec12, workers):
    cfg = DataConfig(batch_size=2, seed=9, num_workers=workers, prefetch=1)
    with AlignIter(rec12, cfg) as it:
        b0 = it.next()
        ref = [b0.data[0].asnumpy(), b0.label[0].asnumpy()]
        it.next()                      # Module.fit reads the previous labels after this call
        time.sleep(0.2)
        np.testing.assert_array_equal(b0.data[0].asnumpy(), ref[0])
        np.testing.assert_array_equal(b0.label[0].asnumpy(), ref[1])
    with AlignIter(rec12, cfg.replace(num_workers=0), copy=True) as it:
        b0 = it.next()
        ref2 = b0.data[0].asnumpy()
        for _ in range(4):
            it.next()
        np.testing.assert_array_equal(b0.data[0].asnumpy(), ref2)
        np.testing.assert_array_equal(ref2, ref[0])


_READER_RACE = textwrap.dedent("""
    import sys
    import mxnet as mx
    import numpy as np
    from insightface_align.data.iterator import _wait_for_readers

    wait = sys.argv[1] == "wait"
    buf = np.ones((4, 4), np.float32)
    writer = buf.view()                    # the slot's own view (from_numpy locks the one it gets)
    nd = mx.nd.from_numpy(buf, zero_copy=True)
    big = mx.nd.ones((1500, 1500))
    slow = big
    for _ in range(6):                     # ~ a second of queued work before the read
        slow = mx.nd.dot(slow, big) * 1e-4
    read = nd + slow[0, 0] * 0             # reads nd only after the slow chain
    if wait:
        _wait_for_readers(nd)
    writer[:] = 7                          # the iterator refilling the slot
    print(float(read.asnumpy().max()))
""")


@pytest.mark.parametrize("wait", ["wait", "no-wait"])
def test_slot_is_refilled_only_after_queued_readers_finish(wait):
    """Zero-copy batches: a read queued on the threaded engine must see the batch it was
    given, not the next one written into the same buffer (and without the wait it does not)."""
    env = dict(os.environ, MXNET_ENGINE_TYPE="ThreadedEnginePerDevice", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _READER_RACE, wait], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[-1]) == (1.0 if wait == "wait" else 7.0)
