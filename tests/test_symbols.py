"""Network zoo: release parity, every recipe, every block/topology, init rules, config errors."""
import json

import mxnet as mx
import numpy as np
import pytest

from insightface_align.errors import ConfigError
from insightface_align.recipe import load_recipe, recipe_names
from insightface_align.symbols.backend import Backend, choose
from insightface_align.symbols.config import NetConfig
from insightface_align.symbols.network import build_heatmaps, get_symbol
from insightface_align.symbols.stats import count_flops, graph_stats, param_shapes

from conftest import REFERENCE_GRAPHS

REFERENCES = sorted(REFERENCE_GRAPHS.glob("*.json"))
XAVIER = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)


def _op_counts(sym):
    counts = {}
    for node in json.loads(sym.tojson())["nodes"]:
        if node["op"] != "null":
            counts[node["op"]] = counts.get(node["op"], 0) + 1
    return counts


def test_reference_graphs_present():
    assert len(REFERENCES) == 11, "tests/data/reference/graphs should hold the 11 release configurations"


def _parity_cases():
    """Every reference graph with the release's operators (native DCN, standard means) and
    with the fused CPU means; those with deformable convs also with fast and portable DCN."""
    for path in REFERENCES:
        yield pytest.param(path, "native", "standard", id=path.stem + "-native")
        yield pytest.param(path, "native", "fused", id=path.stem + "-native-fused")
        if json.loads(path.read_text())["config"]["net_dcn"]:
            yield pytest.param(path, "fast", "fused", id=path.stem + "-fast")
            yield pytest.param(path, "portable", "standard", id=path.stem + "-portable")


@pytest.mark.parametrize("path,impl,mean", list(_parity_cases()))
def test_release_parity(path, impl, mean):
    """Parameter and auxiliary names, shapes and order equal the original release's graph."""
    ref = json.loads(path.read_text())
    cfg = NetConfig.from_release(ref["config"])
    sym = get_symbol(cfg, backend=Backend(impl, mean))
    args, aux = param_shapes(sym, tuple(ref["input"][1]))
    assert [[n, list(s)] for n, s in args] == ref["arguments"]
    assert [[n, list(s)] for n, s in aux] == ref["auxiliary_states"]
    stats = graph_stats(sym, tuple(ref["input"][1]))
    assert stats.params == ref["trainable_params"] and stats.aux == ref["aux_states"]
    assert round(stats.size_mb, 2) == pytest.approx(ref["size_mb"], abs=0.01)
    assert sym.list_outputs() == ["heatmap_output"]
    if impl == "native" and mean == "standard":
        assert _op_counts(sym) == ref["operator_counts"]


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_builds_and_infers(name):
    recipe = load_recipe(name)
    cfg = recipe.network
    sym = get_symbol(cfg)
    _, out, _ = sym.infer_shape(data=(2, 3, cfg.input_size, cfg.input_size))
    assert out == [(2, cfg.num_classes, cfg.heatmap_size, cfg.heatmap_size)]
    paper = recipe.paper.get("size_mb")
    if paper and cfg.multiplier == 1.0:
        size = graph_stats(sym, (1, 3, cfg.input_size, cfg.input_size)).size_mb
        assert abs(size / paper - 1) <= 0.15, f"{name}: {size:.1f} MB vs paper {paper} MB"


def _tiny(**kw):
    base = dict(multiplier=0.125, input_size=64, heatmap_size=32, stacks=2, depth=3)
    base.update(kw)
    return NetConfig(**base)


def _forward_backward(cfg, batch=2):
    heatmaps = build_heatmaps(cfg, backend=choose(None, dcn="native"))
    loss = mx.sym.MakeLoss(mx.sym.add_n(*[mx.sym.mean(mx.sym.square(h)) for h in heatmaps]))
    group = mx.sym.Group([loss] + [mx.sym.BlockGrad(h) for h in heatmaps])
    mod = mx.mod.Module(group, data_names=["data"], label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[("data", (batch, 3, cfg.input_size, cfg.input_size))], for_training=True)
    mod.init_params(XAVIER)
    rng = np.random.RandomState(0)
    data = mx.nd.array(rng.uniform(0, 255, (batch, 3, cfg.input_size, cfg.input_size)))
    mod.forward(mx.io.DataBatch([data]), is_train=True)
    mod.backward()
    outs = [o.asnumpy() for o in mod.get_outputs()]
    grads = {n: g[0].asnumpy() for n, g in zip(mod._exec_group.param_names, mod._exec_group.grad_arrays)}
    return outs, grads


@pytest.mark.parametrize("block", ["resnet", "inception", "hpm", "cab"])
def test_forward_backward_each_block(block):
    # MXNet 1.9.1's MKLDNN Concat backward crashes (SIGFPE) on the HPM/inception concats when
    # their inputs are narrower than 32 channels, so those blocks are tested at width 0.5.
    width = 0.5 if block in ("hpm", "inception") else 0.125
    cfg = _tiny(block=block, topology="hourglass", depth=2, multiplier=width)
    outs, grads = _forward_backward(cfg)
    assert len(outs) == 1 + cfg.stacks
    for hm in outs[1:]:
        assert hm.shape == (2, 68, 32, 32) and np.isfinite(hm).all()
    assert all(np.isfinite(g).all() for g in grads.values())
    assert np.abs(grads["conv0_weight"]).sum() > 0, "gradient must reach the first layer"


@pytest.mark.parametrize("topology,depth", [("hourglass", 3), ("unet", 3), ("dla", 3), ("sat1", 3), ("sat2", 2),
                                            ("sat3", 3)])
def test_forward_backward_each_topology(topology, depth):
    cfg = _tiny(block="cab", topology=topology, depth=depth)
    outs, grads = _forward_backward(cfg)
    assert outs[-1].shape == (2, 68, 32, 32)
    assert np.abs(grads["conv0_weight"]).sum() > 0


def test_stn_forward_backward_and_identity_start():
    """The STN starts at the identity: unwarped heatmaps equal the warped-frame ones."""
    cfg = _tiny(block="cab", topology="sat3", stn=True)
    heatmaps = build_heatmaps(cfg)
    warped = heatmaps[-1].get_children()  # identity("heatmap") <- BilinearSampler
    internals = heatmaps[-1].get_internals()
    group = mx.sym.Group([heatmaps[-1], internals["heatmap_warped_output"]])
    mod = mx.mod.Module(group, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", (2, 3, 64, 64))], for_training=False)
    mod.init_params(XAVIER)
    args, _ = mod.get_params()
    assert np.allclose(args["stn_theta_bias"].asnumpy(), [1, 0, 0, 0, 1, 0])
    assert np.all(args["stn_theta_weight"].asnumpy() == 0)
    data = mx.nd.array(np.random.RandomState(1).uniform(0, 255, (2, 3, 64, 64)))
    mod.forward(mx.io.DataBatch([data]), is_train=False)
    out, before = (o.asnumpy() for o in mod.get_outputs())
    assert warped is not None and np.allclose(out, before, atol=1e-4 * np.abs(before).max())
    _, grads = _forward_backward(cfg)
    assert np.abs(grads["stn_theta_weight"]).sum() > 0, "the localisation net must receive gradients"


@pytest.mark.parametrize("dcn", [1, 2, 3])
def test_forward_backward_deformable(dcn):
    outs, grads = _forward_backward(_tiny(block="cab", topology="sat3", dcn=dcn))
    assert np.isfinite(outs[-1]).all()
    offset_grads = [g for n, g in grads.items() if "offset" in n]
    assert offset_grads and all(np.isfinite(g).all() for g in offset_grads)


def _init_params(cfg):
    sym = get_symbol(cfg)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", (1, 3, cfg.input_size, cfg.input_size))], for_training=False)
    mod.init_params(XAVIER)
    return mod.get_params()[0]


def test_offsets_start_at_zero_and_deconvolutions_bilinear():
    args = _init_params(_tiny(block="cab", topology="sat3", dcn=3))
    offsets = {n: v for n, v in args.items() if "_offset_" in n}
    assert len(offsets) == 2 * 5  # 5 deformable convs (2 stacks), weight + bias each
    assert all(np.all(v.asnumpy() == 0) for v in offsets.values())
    deconv = {n: v.asnumpy() for n, v in args.items() if "upsampling" in n}
    assert len(deconv) == 6
    for name, value in deconv.items():
        expected = mx.nd.zeros(value.shape)
        mx.init.Bilinear()(mx.init.InitDesc(name), expected)
        assert np.array_equal(value, expected.asnumpy()), name
    # Ordinary weights are Xavier-random, not zero.
    assert np.abs(args["conv0_weight"].asnumpy()).sum() > 0


def test_graph_normalises_raw_input():
    """The first convolution sees (x - 127.5) * 0.0078125 of the raw 0..255 input."""
    sym = get_symbol(_tiny())
    internals = sym.get_internals()
    names = [n for n in internals.list_outputs() if n.startswith("_mulscalar")]
    norm = internals[names[0]]
    x = np.random.RandomState(2).uniform(0, 255, (1, 3, 64, 64)).astype(np.float32)
    out = norm.eval(ctx=mx.cpu(), data=mx.nd.array(x))[0].asnumpy()
    assert np.allclose(out, (x - 127.5) * 0.0078125, atol=1e-6)


def test_stacks_have_release_head_names():
    heatmaps = build_heatmaps(_tiny(stacks=3))
    assert [h.list_outputs()[0] for h in heatmaps] == ["heatmap0_output", "heatmap1_output", "heatmap_output"]


@pytest.mark.parametrize("field,kwargs", [
    ("block", {"block": "dense"}),
    ("topology", {"topology": "fpn"}),
    ("depth", {"depth": 7}),
    ("input_size", {"input_size": 100}),
    ("dcn", {"dcn": 4}),
    ("stacks", {"stacks": 0}),
    ("multiplier", {"multiplier": 0}),
])
def test_bad_config_names_the_field(field, kwargs):
    with pytest.raises(ConfigError) as err:
        NetConfig(**kwargs)
    assert err.value.field == field and field in str(err.value)


def test_config_is_architecture_only_and_reads_former_operator_fields():
    """The operators are chosen when a graph is built (symbols/backend.py): a NetConfig has
    no field for them, configs saved with one still load, a recipe override is refused."""
    cfg = NetConfig(block="cab", topology="sat3", depth=3, dcn=3)
    assert not {"dcn_impl", "mean_impl"} & set(cfg.to_dict())
    old = dict(cfg.to_dict(), dcn_impl="fast", mean_impl="fused")
    assert NetConfig.from_dict(old) == cfg
    with pytest.raises(ConfigError, match="sttacks"):
        NetConfig.from_dict(dict(cfg.to_dict(), sttacks=2))
    with pytest.raises(ConfigError, match="dcn_impl.*not part of a recipe"):
        load_recipe("sdu-2d", dcn_impl="fast")


def test_bad_recipe_names_the_field(tmp_path):
    (tmp_path / "bad.yaml").write_text("network:\n  blocks: cab\n")
    with pytest.raises(ConfigError, match="blocks"):
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "bad2.yaml").write_text("netwrk:\n  block: cab\n")
    with pytest.raises(ConfigError, match="netwrk"):
        load_recipe(tmp_path / "bad2.yaml")
    with pytest.raises(ConfigError, match="no recipe"):
        load_recipe("no-such-recipe")


def test_flops_of_a_single_convolution():
    data = mx.sym.Variable("data")
    sym = mx.sym.Convolution(data, num_filter=8, kernel=(3, 3), pad=(1, 1), no_bias=True, name="c")
    assert count_flops(sym, (1, 4, 10, 10)) == 2 * 8 * 4 * 9 * 10 * 10


def test_flops_of_a_deformable_unit_do_not_depend_on_the_implementation():
    """The fast unit's table GEMM (FullyConnected, flatten=False, 4D) counts the MACs of the
    offset conv + the 3x3 conv, like the native graph's two convolutions (which also counts
    its bilinear sampling, 4 x C MACs per tap)."""
    from insightface_align.symbols.deform import deformable_unit

    shape = (2, 4, 6, 5)
    pixels = 2 * 6 * 5
    convs = 2 * pixels * (18 * 4 * 9 + 8 * 4 * 9)
    for impl in ("fast", "portable"):
        sym = deformable_unit(mx.sym.Variable("data"), 8, "u", "u_offset", impl=impl, in_channels=4)
        assert count_flops(sym, shape) == convs, impl
    native = deformable_unit(mx.sym.Variable("data"), 8, "u", "u_offset", impl="native")
    assert count_flops(native, shape) == convs + 2 * pixels * 9 * 4 * 4
