"""Optimizer states: a round trip equals MXNet's own, and no file can run code or crash the loader."""
from __future__ import annotations

import pickle

import mxnet as mx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from insightface_align.errors import DataError
from insightface_align.optimizer_states import load_states, save_states


def _updater(steps: int, seed: int = 0):
    """A Nadam updater with a scheduler, after `steps` updates of three parameters."""
    sched = mx.lr_scheduler.MultiFactorScheduler(step=[2, 4], factor=0.5, base_lr=0.01)
    updater = mx.optimizer.get_updater(mx.optimizer.create("nadam", learning_rate=0.01, lr_scheduler=sched))
    rng = np.random.RandomState(seed)
    weights = [mx.nd.array(rng.randn(*shape)) for shape in ((3, 4), (5,), (2, 2, 2))]
    for _ in range(steps):
        for i, w in enumerate(weights):
            updater(i, mx.nd.array(rng.randn(*w.shape)), w)
    return updater, weights


def _continue(updater, weights, steps=3, seed=1):
    rng = np.random.RandomState(seed)
    for _ in range(steps):
        for i, w in enumerate(weights):
            updater(i, mx.nd.array(rng.randn(*w.shape)), w)
    return [w.asnumpy() for w in weights]


def test_round_trip_continues_exactly_like_the_original(tmp_path):
    original, weights = _updater(5)
    path = str(tmp_path / "m-0005.states")
    save_states(path, original)
    copies = [w.copy() for w in weights]
    fresh, _ = _updater(0)
    load_states(path, fresh)
    assert fresh.optimizer.num_update == original.optimizer.num_update
    assert fresh.optimizer.m_schedule == original.optimizer.m_schedule
    assert fresh.optimizer.lr_scheduler.cur_step_ind == original.optimizer.lr_scheduler.cur_step_ind
    expected = _continue(original, weights)
    got = _continue(fresh, copies)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


class _Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickled_states_are_refused_unless_trusted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m-0001.states"
    path.write_bytes(pickle.dumps(_Exploit()))
    fresh, _ = _updater(0)
    with pytest.raises(DataError) as exc:
        load_states(str(path), fresh)
    assert str(exc.value).startswith(str(path)) and "pickle" in str(exc.value) and "--trust-pickled-states" in str(exc.value)
    assert not (tmp_path / "PWNED").exists()
    original, _ = _updater(2)
    path.write_bytes(original.get_states(dump_optimizer=False))  # an older checkpoint the user made
    load_states(str(path), fresh, trust_pickle=True)
    assert set(fresh.states) == set(original.states)


def test_other_optimizer_is_a_clear_error(tmp_path):
    original, _ = _updater(1)
    path = str(tmp_path / "s.states")
    save_states(path, original)
    sgd = mx.optimizer.get_updater(mx.optimizer.create("sgd", learning_rate=0.1, momentum=0.9))
    with pytest.raises(DataError, match="states of optimizer 'nadam', but this run uses 'sgd'"):
        load_states(path, sgd)


def test_missing_file_names_it(tmp_path):
    fresh, _ = _updater(0)
    with pytest.raises(DataError) as exc:
        load_states(str(tmp_path / "none.states"), fresh)
    assert "none.states" in str(exc.value)


_GOOD = {}


def _good_bytes(tmp_path_factory=None) -> bytes:
    if "b" not in _GOOD:
        import tempfile, os
        original, _ = _updater(2)
        with tempfile.TemporaryDirectory() as d:
            save_states(os.path.join(d, "s.states"), original)
            _GOOD["b"] = open(os.path.join(d, "s.states"), "rb").read()
    return _GOOD["b"]


@given(st.data())
@settings(max_examples=40, deadline=None)
def test_truncated_or_corrupted_files_give_a_clear_error(tmp_path_factory, data):
    good = bytearray(_good_bytes())
    if data.draw(st.booleans()):
        good = good[:data.draw(st.integers(0, len(good) - 1))]
    for _ in range(data.draw(st.integers(0, 6))):
        if good:
            good[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("s") / "x.states"
    path.write_bytes(bytes(good))
    fresh, _ = _updater(0)
    try:
        load_states(str(path), fresh)
    except DataError as exc:
        assert str(path) in str(exc)


@given(st.binary(max_size=400))
@settings(max_examples=40, deadline=None)
def test_random_bytes_give_a_clear_error(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("r") / "x.states"
    path.write_bytes(blob)
    fresh, _ = _updater(0)
    with pytest.raises(DataError):
        load_states(str(path), fresh)


def test_ndarray_check_accepts_what_mxnet_writes(tmp_path):
    from insightface_align.ndfile import check_ndarray_file

    path = tmp_path / "a.params"
    mx.nd.save(str(path), {"arg:w": mx.nd.ones((2, 3)), "aux:m": mx.nd.zeros((4,), dtype="float16"),
                           "b": mx.nd.array([1, 2], dtype="uint8"), "i": mx.nd.array([7], dtype="int64")})
    assert check_ndarray_file(path) == 4
    mx.nd.save(str(path), [mx.nd.ones((1,))])  # unnamed list
    assert check_ndarray_file(path) == 1


def test_a_huge_shape_is_caught_before_mxnet_allocates(tmp_path):
    import struct

    from insightface_align.ndfile import check_ndarray_file

    path = tmp_path / "a.params"
    mx.nd.save(str(path), {"w": mx.nd.ones((2, 3))})
    data = bytearray(path.read_bytes())
    struct.pack_into("<q", data, 0x24, 2 ** 40)  # the first dimension
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="needs .* bytes but only"):
        check_ndarray_file(path)
