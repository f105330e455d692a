"""Losses: the coherent term's equivariance, heatmap losses and their gradients."""
import mxnet as mx
import numpy as np
import pytest
from mxnet.test_utils import check_numeric_gradient

from insightface_align.data.flip import FLIP_PERMUTATION
from insightface_align.data.targets import render_heatmaps as numpy_heatmaps
from insightface_align.errors import ConfigError
from insightface_align.losses import (LossConfig, coherent_loss, mse, render_heatmaps, sigmoid_ce, softmax_ce,
                                      training_symbol)

S = 16  # heatmap size in these tests


def _interleave(h_i, h_t):
    out = np.empty((2 * len(h_i),) + h_i.shape[1:], dtype=h_i.dtype)
    out[0::2], out[1::2] = h_i, h_t
    return out


def _coherent_value(h_i, h_t, affine, flip, variant="paper"):
    heat = mx.sym.Variable("heat")
    sym = coherent_loss(heat, mx.sym.Variable("aff"), mx.sym.Variable("flip"), S, variant)
    aff = np.repeat(np.asarray(affine, dtype=np.float32).reshape(-1, 6), 2, axis=0)
    flp = np.repeat(np.asarray(flip, dtype=np.float32), 2)
    out = sym.eval(heat=mx.nd.array(_interleave(h_i, h_t)), aff=mx.nd.array(aff), flip=mx.nd.array(flp))
    return float(out[0].asnumpy())


def _shift(h, tx, ty):
    """out(x, y) = h(x - tx, y - ty), zero where that falls outside."""
    out = np.zeros_like(h)
    ys, xs = np.mgrid[0:S, 0:S]
    sx, sy = xs - tx, ys - ty
    ok = (sx >= 0) & (sx < S) & (sy >= 0) & (sy < S)
    out[..., ys[ok], xs[ok]] = h[..., sy[ok], sx[ok]]
    return out


@pytest.fixture
def heat():
    return np.random.RandomState(0).rand(2, 68, S, S).astype(np.float32)


def test_coherent_zero_for_equivariant_flip(heat):
    mirrored = heat[:, FLIP_PERMUTATION, :, ::-1]
    mirror = [-1, 0, S - 1, 0, 1, 0]
    assert _coherent_value(heat, mirrored, [mirror, mirror], [1, 1]) < 1e-10
    assert _coherent_value(heat, np.random.RandomState(1).rand(*heat.shape), [mirror] * 2, [1, 1]) > 1e-2
    # A mirror without the channel permutation is not equivariant.
    assert _coherent_value(heat, heat[:, :, :, ::-1], [mirror] * 2, [1, 1]) > 1e-3


@pytest.mark.parametrize("tx,ty", [(3, -2), (-5, 4), (0, 0)])
def test_coherent_zero_for_integer_translation(heat, tx, ty):
    shifted = _shift(heat, tx, ty)
    affine = [[1, 0, tx, 0, 1, ty]] * 2
    assert _coherent_value(heat, shifted, affine, [0, 0]) < 1e-10
    assert _coherent_value(heat, _shift(heat, tx + 1, ty), affine, [0, 0]) > 1e-3


def test_coherent_zero_for_quarter_rotation_with_flip(heat):
    """A 90-degree rotation about the centre composed with a mirror maps pixel centres to pixel centres."""
    c = (S - 1) / 2.0
    # mirror then rotate: (x, y) -> (S-1-x, y) -> rotate 90: (x', y') = (c - (y - c), c + (x_m - c))
    rot = np.array([[0, -1, 2 * c], [1, 0, 0]], dtype=np.float64)
    mirror = np.array([[-1, 0, S - 1], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    a = rot @ mirror
    xs, ys = np.meshgrid(np.arange(S), np.arange(S))
    permuted = heat[:, FLIP_PERMUTATION]
    target = np.zeros_like(heat)
    tx = np.rint(a[0, 0] * xs + a[0, 1] * ys + a[0, 2]).astype(int)
    ty = np.rint(a[1, 0] * xs + a[1, 1] * ys + a[1, 2]).astype(int)
    target[..., ty, tx] = permuted[..., ys, xs]
    assert _coherent_value(heat, target, [a.reshape(-1)] * 2, [1, 1]) < 1e-10


def test_release_variant_is_smooth_l1_on_flips(heat):
    mirror = [-1, 0, S - 1, 0, 1, 0]
    other = heat[:, FLIP_PERMUTATION, :, ::-1] + 0.5
    value = _coherent_value(heat, other, [mirror] * 2, [1, 1], variant="release")
    assert value == pytest.approx(0.5 * 0.5 ** 2, rel=1e-4)  # smooth-L1 of 0.5 is 0.5 * 0.5^2


def _numeric_check(sym, location):
    check_numeric_gradient(sym, location, numeric_eps=1e-3, rtol=1e-2, atol=1e-4, dtype=np.float64)


@pytest.mark.parametrize("fn", [sigmoid_ce, softmax_ce, mse])
def test_heatmap_loss_gradients(fn):
    rng = np.random.RandomState(3)
    pred, label = rng.randn(2, 3, 4, 4), rng.rand(2, 3, 4, 4)
    sym = fn(mx.sym.Variable("pred"), mx.sym.Variable("label"))
    _numeric_check(sym, {"pred": pred, "label": label})


def test_sigmoid_ce_value():
    pred, label = np.array([[[[2.0, -1.0]]]]), np.array([[[[1.0, 0.0]]]])
    expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))])
    out = sigmoid_ce(mx.sym.Variable("p"), mx.sym.Variable("l")).eval(p=mx.nd.array(pred), l=mx.nd.array(label))
    assert float(out[0].asnumpy()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_coherent_gradient(variant):
    """Analytic gradient . d equals the central difference along random directions d."""
    rng = np.random.RandomState(4)
    size = 6
    heat = rng.rand(4, 68, size, size).astype(np.float32)
    affine = np.repeat(np.array([[0.9, 0.1, 0.4, -0.1, 1.05, -0.3], [-1, 0, size - 1, 0, 1, 0]]), 2, axis=0)
    flip = np.array([0, 0, 1, 1])
    sym = coherent_loss(mx.sym.Variable("heat"), mx.sym.Variable("aff"), mx.sym.Variable("flip"), size, variant)
    args = {"heat": mx.nd.array(heat), "aff": mx.nd.array(affine), "flip": mx.nd.array(flip)}
    grad = mx.nd.zeros(heat.shape)
    exe = sym.bind(mx.cpu(), args, args_grad={"heat": grad}, grad_req={"heat": "write", "aff": "null", "flip": "null"})
    exe.forward(is_train=True)
    exe.backward(mx.nd.ones((1,)))
    analytic = grad.asnumpy().astype(np.float64)

    def value(x):
        args["heat"][:] = x
        return float(exe.forward(is_train=False)[0].asnumpy()[0])

    eps = 1e-2
    for _ in range(5):
        d = rng.randn(*heat.shape).astype(np.float32)
        numeric = (value(heat + eps * d) - value(heat - eps * d)) / (2 * eps)
        assert numeric == pytest.approx(float((analytic * d).sum()), rel=2e-2, abs=1e-5)
    assert np.abs(analytic).sum() > 0


@pytest.mark.parametrize("sigma", [0.0, 1.0, 2.5])
def test_in_graph_heatmaps_match_iterator_targets(sigma):
    pts = np.array([[[3.2, 4.7], [15.4, 0.1], [-3.0, 5.0], [7.5, 8.49]]], dtype=np.float32)
    expected = numpy_heatmaps(pts, S, sigma)
    out = render_heatmaps(mx.sym.Variable("c"), S, sigma).eval(c=mx.nd.array(pts))[0].asnumpy()
    assert np.allclose(out, expected, atol=2e-4)
    assert out[0, 2].max() == 0  # outside the map: all zero


def test_training_symbol_heads():
    heads = [mx.sym.Variable("h0"), mx.sym.Variable("h1")]
    sym = training_symbol(heads, LossConfig(coherent="both"), S)
    assert sym.list_outputs() == ["stack0_loss_output", "stack1_loss_output", "coherent_loss_output",
                                  "heatmap_pred_output"]
    assert {"softmax_label", "pair_affine", "pair_flip"} <= set(sym.list_arguments())
    assert "coord_label" in training_symbol(heads, LossConfig(label_mode="coords"), S).list_arguments()


@pytest.mark.parametrize("kwargs,field", [({"heatmap": "l1"}, "loss.heatmap"), ({"coherent": "rot"}, "loss.coherent"),
                                          ({"coherent_variant": "release", "coherent": "both"}, "loss.coherent")])
def test_loss_config_errors(kwargs, field):
    with pytest.raises(ConfigError) as err:
        LossConfig(**kwargs)
    assert err.value.field == field
