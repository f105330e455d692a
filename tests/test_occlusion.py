"""Occlusion flags: synth_meta.jsonl -> reader -> record comment -> iterator -> wider targets."""
import json

import cv2
import mxnet as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from insightface_align.data.config import DataConfig
from insightface_align.data.flip import FLIP_PERMUTATION
from insightface_align.data.iterator import AlignIter
from insightface_align.data.occlusion import occlusion_flags, with_occlusion
from insightface_align.data.recfile import RecordFile
from insightface_align.data.record import pack_record
from insightface_align.datasets.synth_meta import read_occlusion
from insightface_align.errors import DataError

JPEG = cv2.imencode(".jpg", np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8))[1].tobytes()
FLAGS = np.zeros(68, bool)
FLAGS[[3, 48, 50, 67]] = True


def test_flags_round_trip_and_decoders_ignore_them():
    tagged = with_occlusion(JPEG, FLAGS)
    assert np.array_equal(occlusion_flags(tagged), FLAGS)
    assert occlusion_flags(JPEG) is None
    assert tagged[:4] == JPEG[:4]  # the JFIF header stays first
    same = [np.array_equal(cv2.imdecode(np.frombuffer(a, np.uint8), 1), cv2.imdecode(np.frombuffer(b, np.uint8), 1))
            for a, b in ((JPEG, tagged),)]
    assert same == [True]
    assert np.array_equal(mx.image.imdecode(JPEG).asnumpy(), mx.image.imdecode(tagged).asnumpy())
    header, payload = mx.recordio.unpack(pack_record(7, np.zeros((384, 384, 3), np.uint8), np.zeros((68, 2)),
                                                     occluded=FLAGS))
    assert header.id == 7 and len(header.label) == 136 and np.array_equal(occlusion_flags(payload), FLAGS)
    with pytest.raises(ValueError, match="68 occlusion flags"):
        with_occlusion(JPEG, np.zeros(5, bool))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 400), st.integers(0, 255))
def test_flag_parser_never_fails_on_any_bytes(noise, cut, byte):
    tagged = with_occlusion(JPEG, FLAGS)
    for data in (noise, tagged[:cut], tagged[:cut] + bytes([byte]) + tagged[cut + 1:], b"\xff\xd8" + noise):
        got = occlusion_flags(data)
        assert got is None or (got.shape == (68,) and got.dtype == bool)


def _meta_line(name, flags):
    return json.dumps({"name": name, "occluded": [int(f) for f in flags], "coverage": 0.1})


def test_meta_parser_reads_flags_and_names_bad_lines(tmp_path):
    path = tmp_path / "synth_meta.jsonl"
    path.write_text(_meta_line("synth_000000", FLAGS) + "\n\n" + _meta_line("synth_000001", ~FLAGS) + "\n")
    got = read_occlusion(str(path))
    assert np.array_equal(got["synth_000000"], FLAGS) and np.array_equal(got["synth_000001"], ~FLAGS)
    for bad, message in (("{", "not a JSON line"), ('{"name": 3, "occluded": []}', "string 'name'"),
                         ('{"name": "a", "occluded": [0, 1]}', "68 flags"),
                         (json.dumps({"name": "a", "occluded": [0.5] * 68}), "68 flags")):
        path.write_text(_meta_line("ok", FLAGS) + "\n" + bad + "\n")
        with pytest.raises(DataError, match=message) as exc:
            read_occlusion(str(path))
        assert f"{path}:2" in str(exc.value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 2000))
def test_meta_parser_gives_data_errors_only(tmp_path_factory, noise, cut):
    good = (_meta_line("synth_000000", FLAGS) + "\n").encode()
    path = tmp_path_factory.mktemp("meta") / "synth_meta.jsonl"
    for data in (noise, good[:cut], good[:cut] + noise):
        path.write_bytes(data)
        try:
            result = read_occlusion(str(path))
        except DataError:
            continue
        assert all(v.shape == (68,) for v in result.values())


@pytest.fixture(scope="module")
def occluded_set(tmp_path_factory):
    from insightface_align.datasets.w300 import W300Reader
    from insightface_align.pack import pack_dataset
    from insightface_align.synthetic.dataset import generate_folder
    from insightface_align.synthetic.generate import SynthConfig

    d = tmp_path_factory.mktemp("occ")
    generate_folder(str(d / "raw"), 8, seed=3, config=SynthConfig(mode="2d", size=192, occlusion_prob=1.0), workers=1)
    meta = [json.loads(line) for line in open(d / "raw" / "synth_meta.jsonl")]
    pack_dataset(W300Reader([str(d / "raw")]), str(d / "set"), "t", workers=1, progress=False)
    return str(d / "set" / "t.rec"), [np.array(m["occluded"], bool) for m in meta]


def test_packed_rendered_faces_carry_their_flags(occluded_set):
    rec, flags = occluded_set
    records = RecordFile(rec)
    assert sum(f.sum() for f in flags) > 0
    for i, want in enumerate(flags):
        assert np.array_equal(occlusion_flags(records.read_sample(i)[0]), want), i


def _wide(maps):
    """Which target maps are the wide (occluded) ones: their mass is ~2 pi sigma^2."""
    return maps.reshape(maps.shape[0], 68, -1).sum(axis=2) > 20.0


def test_occluded_points_get_wider_targets_relabelled_on_flips(occluded_set):
    rec, flags = occluded_set
    common = dict(batch_size=8, train=True, shuffle=False, sigma=1.0, occluded_sigma=3.0, rotate=0.0)
    with AlignIter(rec, DataConfig(**common, flip=False), copy=True) as it:
        wide = _wide(next(iter(it)).label[0].asnumpy())
    inside = np.ones_like(wide)
    assert np.array_equal(wide, np.stack(flags) & inside)
    with AlignIter(rec, DataConfig(**common, flip=True), copy=True) as it:
        wide = _wide(next(iter(it)).label[0].asnumpy())
    kinds = [("same" if np.array_equal(w, f) else "flipped" if np.array_equal(w, f[FLIP_PERMUTATION]) else "wrong")
             for w, f in zip(wide, flags)]
    assert "wrong" not in kinds and "flipped" in kinds, kinds
    with AlignIter(rec, DataConfig(**dict(common, occluded_sigma=None), flip=False), copy=True) as it:
        assert not _wide(next(iter(it)).label[0].asnumpy()).any()
