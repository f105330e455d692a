"""Deformable 3x3 convolution: MXNet's native op, or CPU-friendly "conv first, sample after" graphs.

All implementations take the same parameters ({name}_weight (F, C, 3, 3), {name}_bias
(F,)), so a checkpoint trained with one runs with another. The native
`contrib.DeformableConvolution` has a slow CPU kernel (its backward especially). The
other two mix channels first (one FullyConnected to the nine W_k . x, a table) and
then blend the bilinear corners of the nine taps:
- "fast": the blend is this project's compiled operator (symbols/ext, loaded with
  mx.library.load), vectorised and threaded; in a deformable unit the offset conv
  shares the table GEMM (`sdu_deform_unit`), a lone deformable conv uses
  `sdu_dcn_blend`. CPU only;
- "portable": the blend is `take` + `batch_dot`, standard operators only, so an
  exported graph needs nothing but stock MXNet (about 1.6x slower than "fast" in
  training, 1.5x at inference, tools/bench.py dcn).
(One BilinearSampler call over all nine taps + a 1x1 conv was measured 2-3x slower
than "portable" in training: the sampler's CPU kernel is serial.)

Native semantics reproduced (measured on MXNet 1.9.1, see tests/test_deform.py):
- offset channel 2k is the row (y) shift and 2k+1 the column (x) shift of tap
  k = 3i + j, tap (i, j) sampling (y + i - 1 + dy, x + j - 1 + dx);
- a sample contributes only when 0 <= y < H and 0 <= x < W (so -0.5 gives 0, not half
  a pixel); inside it is bilinear, a sample in the last fractional row/column
  [H-1, H) reads row H-1 only and gets no gradient along that axis (also at exactly
  H-1); at an integer coordinate the offset gradient is the forward difference.
The portable graph indexes its table with float arithmetic: exact while
B*H*W*9 < 2**24 in float32 (B=8 at 64x64 uses 294912).
"""
from __future__ import annotations

import mxnet as mx

from insightface_align.errors import ConfigError

from . import ext
from .backend import DCN_IMPLS

TAPS = 9                                # a 3x3 kernel's taps
OFFSET_CHANNELS = 2 * TAPS              # (dy, dx) per tap: the offset conv's outputs
OFFSET_COLUMNS = TAPS * OFFSET_CHANNELS  # 162: a fast unit's table starts with the offset conv's taps, then 9F


def _check_impl(impl: str) -> None:
    if impl not in DCN_IMPLS:
        raise ConfigError("dcn_impl", f"deformable_conv needs one of {', '.join(DCN_IMPLS)} "
                                      f"(symbols/backend.py chooses), got {impl!r}")


def _native(data, offset, num_filter, name, no_bias):
    return mx.sym.contrib.DeformableConvolution(
        data=data, offset=offset, num_filter=num_filter, kernel=(3, 3), stride=(1, 1),
        pad=(1, 1), dilate=(1, 1), num_deformable_group=1, no_bias=no_bias, name=name)


def _axis_coordinates(shift, base, tap, size_minus_1, size):
    """Absolute sample coordinate along one axis, rewritten to the native rule.

    shift: (B, 9, H, W) learned offsets; base: pixel index broadcastable to it; tap:
    (1, 9, 1, 1) tap displacement (-1, 0, 1). Returns the clamped coordinate and the
    0/1 mask of samples inside [0, size).
    """
    pos = mx.sym.broadcast_add(shift, mx.sym.broadcast_add(tap, base))
    inside = mx.sym.broadcast_mul(pos >= 0, mx.sym.broadcast_lesser(pos, size))
    last = mx.sym.broadcast_like(size_minus_1, pos)
    # Native op: [size-1, size) reads the last row/column only, with no gradient.
    clamped = mx.sym.where(mx.sym.broadcast_lesser(pos, size_minus_1), pos, last)
    return clamped, inside


def _tap_geometry(data, offset):
    """Bilinear corners of the nine taps as rows of the tap table, and their weights.

    Returns (index, weight, pixel_shape): index and weight (B, H, W, 9, 4), index the
    row of the (B*H*W*9, F) table holding that corner's W_k . x; pixel_shape a
    (B, H, W) tensor whose shape the output takes.
    """
    rows = mx.sym.contrib.arange_like(data, axis=2)                 # (H,)
    cols = mx.sym.contrib.arange_like(data, axis=3)                 # (W,)
    h_minus_1 = mx.sym.reshape(mx.sym.max(rows), shape=(1, 1, 1, 1))
    w_minus_1 = mx.sym.reshape(mx.sym.max(cols), shape=(1, 1, 1, 1))
    shifts = mx.sym.reshape(offset, shape=(0, -4, 9, 2, 0, 0))      # (B, 9, [dy, dx], H, W)
    dy = mx.sym.reshape(mx.sym.slice_axis(shifts, axis=2, begin=0, end=1), shape=(0, 0, -3, 0))
    dx = mx.sym.reshape(mx.sym.slice_axis(shifts, axis=2, begin=1, end=2), shape=(0, 0, -3, 0))
    tap = mx.sym.reshape(mx.sym.contrib.arange_like(dy, axis=1), shape=(1, 9, 1, 1))  # k = 3i + j
    tap_i = mx.sym.floor(tap / 3)
    tap_j = tap - 3 * tap_i - 1
    tap_i = tap_i - 1

    y, y_in = _axis_coordinates(dy, mx.sym.reshape(rows, shape=(1, 1, -1, 1)), tap_i, h_minus_1, h_minus_1 + 1)
    x, x_in = _axis_coordinates(dx, mx.sym.reshape(cols, shape=(1, 1, 1, -1)), tap_j, w_minus_1, w_minus_1 + 1)
    inside = y_in * x_in
    y = y * inside            # dropped samples: any valid row, zero weight, zero gradient
    x = x * inside
    y0 = mx.sym.floor(y)
    x0 = mx.sym.floor(x)
    fy = y - y0               # the offset gradient flows through these fractions only
    fx = x - x0
    y1 = mx.sym.broadcast_minimum(y0 + 1, h_minus_1)   # weight 0 when y0 is the last row
    x1 = mx.sym.broadcast_minimum(x0 + 1, w_minus_1)

    width = w_minus_1 + 1
    batch = mx.sym.reshape(mx.sym.contrib.arange_like(dy, axis=0), shape=(-1, 1, 1, 1))
    first_row = mx.sym.broadcast_mul(batch, (h_minus_1 + 1) * width)

    def table_row(yy, xx):
        pixel = mx.sym.broadcast_add(first_row, mx.sym.broadcast_mul(yy, width) + xx)
        return mx.sym.broadcast_add(pixel * 9, tap)

    corners = [table_row(y0, x0), table_row(y0, x1), table_row(y1, x0), table_row(y1, x1)]
    weights = [(1 - fy) * (1 - fx) * inside, (1 - fy) * fx * inside,
               fy * (1 - fx) * inside, fy * fx * inside]
    # (B, 9, 4, H, W) -> (B, H, W, 9, 4): the 36 rows of one output pixel are adjacent.
    index = mx.sym.transpose(mx.sym.stack(*corners, axis=2), axes=(0, 3, 4, 1, 2))
    weight = mx.sym.transpose(mx.sym.stack(*weights, axis=2), axes=(0, 3, 4, 1, 2))
    pixel_shape = mx.sym.reshape(mx.sym.slice_axis(dy, axis=1, begin=0, end=1), shape=(0, -3, 0))
    return index, weight, pixel_shape


def _shaped_like_conv_weight(weight, data, num_filter):
    """`weight` unchanged, but shape inference now gives it (F, C, 3, 3) from `data`.

    MXNet cannot infer a variable's shape backwards through reshape/transpose; the
    elementwise sum with zeros of the right shape (built from one pixel of data) can.
    """
    probe = mx.sym.slice(data, begin=(0, 0, 0, 0), end=(1, None, 1, 1))   # (1, C, 1, 1)
    zeros = mx.sym.zeros_like(mx.sym.broadcast_to(probe, shape=(num_filter, 0, 3, 3)))
    return mx.sym.elemwise_add(weight, mx.sym.BlockGrad(zeros))


def _fc_weight(weight):
    """(F, C, 3, 3) conv weight -> (9F, C) FullyConnected weight, row k*F + f = W[f, :, i, j]."""
    return mx.sym.reshape(mx.sym.reshape(mx.sym.transpose(weight, axes=(2, 3, 0, 1)), shape=(-3, 0, 0)),
                          shape=(-3, 0))


def _tap_table(data, fc_weight, num_hidden, name):
    """(B, H, W, N) table: one FullyConnected (one oneDNN GEMM, the FLOPs of the 3x3 conv)
    over the pixels; with fc_weight = _fc_weight(W), pixel q's row holds W_k . x(q) in
    columns k*F .. k*F+F-1."""
    pixels = mx.sym.transpose(data, axes=(0, 2, 3, 1))                              # (B, H, W, C)
    return mx.sym.FullyConnected(pixels, weight=fc_weight, num_hidden=num_hidden, no_bias=True, flatten=False,
                                 name=name + "_taps")


def _bias_variable(name, weight, init=None):
    """{name}_bias, given its (F,) shape through the weight (see _shaped_like_conv_weight)."""
    like_f = mx.sym.zeros_like(mx.sym.sum(weight, axis=(1, 2, 3)))
    bias = mx.sym.Variable(name + "_bias") if init is None else mx.sym.Variable(name + "_bias", init=init)
    return mx.sym.elemwise_add(bias, like_f)


def _fast(data, offset, num_filter, name, no_bias):
    """Conv first, sample after, with the compiled blend (`sdu_dcn_blend`, symbols/ext).

    out(p) = sum_k W_k . x(p + p_k + dp_k) = sum_k sample(W_k . x, p + p_k + dp_k): the
    table of all nine W_k . x comes from one GEMM, then the operator blends the 4
    bilinear corners of the 9 taps per pixel (36 rows of F floats) and adds the bias,
    writing NCHW directly. Same rules and gradients as the native op.
    """
    ext.load()
    weight = _shaped_like_conv_weight(mx.sym.Variable(name + "_weight"), data, num_filter)
    table = _tap_table(data, _fc_weight(weight), 9 * num_filter, name)
    # Offset first: the argument order then matches the native op's (release parity).
    inputs = [offset, table] if no_bias else [offset, table, _bias_variable(name, weight)]
    return mx.sym.sdu_dcn_blend(*inputs, no_bias=bool(no_bias), name=name)


def _unit_parameters(data, num_filter, name, offset_name, no_bias, in_channels):
    """(offset_weight, offset_bias, weight, bias-or-None) variables of a unit.

    With in_channels known their shapes are declared; otherwise they come from `data`
    through zero-valued elementwise ops (see _shaped_like_conv_weight), which cost a
    pass over each weight per forward.
    """
    zero = mx.init.Zero()
    if in_channels:
        offset_weight = mx.sym.Variable(offset_name + "_weight", shape=(OFFSET_CHANNELS, in_channels, 3, 3),
                                        init=zero)
        offset_bias = mx.sym.Variable(offset_name + "_bias", shape=(OFFSET_CHANNELS,), init=zero)
        weight = mx.sym.Variable(name + "_weight", shape=(num_filter, in_channels, 3, 3))
        bias = None if no_bias else mx.sym.Variable(name + "_bias", shape=(num_filter,))
        return offset_weight, offset_bias, weight, bias
    offset_weight = _shaped_like_conv_weight(mx.sym.Variable(offset_name + "_weight", init=zero), data,
                                             OFFSET_CHANNELS)
    offset_bias = _bias_variable(offset_name, offset_weight, init=zero)
    weight = _shaped_like_conv_weight(mx.sym.Variable(name + "_weight"), data, num_filter)
    bias = None if no_bias else _bias_variable(name, weight)
    return offset_weight, offset_bias, weight, bias


def _fast_unit(data, num_filter, name, offset_name, no_bias, in_channels=None):
    """Offset conv + deformable conv from ONE table GEMM (`sdu_deform_unit`, symbols/ext).

    The offset conv is a plain 3x3 conv of the same input, so its 18 x 9 tap columns
    join the deformable conv's 9F in the FullyConnected; the operator sums them into
    offsets (a 3x3 shift-add) and blends. On CPU this replaces a 3x3 convolution with 18
    outputs, which oneDNN runs far below peak (its backward especially), by 7% more
    columns in a GEMM that runs at peak.
    """
    ext.load()
    offset_weight, offset_bias, weight, bias = _unit_parameters(data, num_filter, name, offset_name, no_bias,
                                                                in_channels)
    # The offset bias joins the weight branch here (a zero-cost dependency) so the
    # argument order is the native unit's: data, offset weight, offset bias, weight, bias.
    offset_fc = mx.sym.broadcast_add(_fc_weight(offset_weight),
                                     mx.sym.BlockGrad(mx.sym.zeros_like(mx.sym.sum(offset_bias, keepdims=True))))
    fc_weight = mx.sym.concat(offset_fc, _fc_weight(weight), dim=0)       # (OFFSET_COLUMNS + 9F, C)
    table = _tap_table(data, fc_weight, OFFSET_COLUMNS + TAPS * num_filter, name)
    inputs = [table, offset_bias] if bias is None else [table, offset_bias, bias]
    return mx.sym.sdu_deform_unit(*inputs, no_bias=bias is None, name=name)


def _portable(data, offset, num_filter, name, no_bias):
    """Conv first, sample after, with standard operators only.

    The table as in `_fast`; `take` gathers the 4 bilinear corners of the 9 taps (36
    rows of F) and `batch_dot` blends them with their weights. Exact (float64 agrees
    with the native op to ~1e-15), and runs on any MXNet build.
    """
    weight = _shaped_like_conv_weight(mx.sym.Variable(name + "_weight"), data, num_filter)
    index, corner_weight, pixel_shape = _tap_geometry(data, offset)
    table = mx.sym.reshape(_tap_table(data, _fc_weight(weight), 9 * num_filter, name),
                           shape=(-1, num_filter))                                  # (B*H*W*9, F)
    # Gathering per tap group instead was measured no faster (no L3 win).
    corners = mx.sym.reshape(mx.sym.take(table, mx.sym.reshape(index, shape=(-1,))), shape=(-1, 36, num_filter))
    blend = mx.sym.reshape(corner_weight, shape=(-1, 1, 36))
    out = mx.sym.reshape(mx.sym.batch_dot(blend, corners), shape=(-1, num_filter))  # (B*H*W, F)
    if not no_bias:
        out = mx.sym.broadcast_add(out, mx.sym.reshape(_bias_variable(name, weight), shape=(1, -1)))
    out = mx.sym.reshape_like(out, pixel_shape, lhs_begin=0, lhs_end=1)            # (B, H, W, F)
    return mx.sym.transpose(out, axes=(0, 3, 1, 2), name=name)


def deformable_conv(data, offset, num_filter, name, no_bias=False, impl="native"):
    """3x3 / stride 1 / pad 1 deformable convolution with params {name}_weight, {name}_bias."""
    _check_impl(impl)
    build = {"native": _native, "fast": _fast, "portable": _portable}[impl]
    return build(data, offset, num_filter, name, no_bias)


def deformable_unit(data, num_filter, name, offset_name, no_bias=False, impl="native", in_channels=None):
    """Offsets from a zero-initialised 3x3 conv (so training starts as a plain conv), then the DCN.

    With impl "fast" both convolutions share one GEMM (`_fast_unit`); in_channels (the
    channels of `data`), when given, saves that graph its runtime shape-inference ops."""
    _check_impl(impl)
    if impl == "fast":
        return _fast_unit(data, num_filter, name, offset_name, no_bias, in_channels)
    offset_weight = mx.sym.Variable(offset_name + "_weight", init=mx.init.Zero())
    offset_bias = mx.sym.Variable(offset_name + "_bias", init=mx.init.Zero())
    offset = mx.sym.Convolution(data=data, weight=offset_weight, bias=offset_bias, num_filter=OFFSET_CHANNELS,
                                kernel=(3, 3), stride=(1, 1), pad=(1, 1), name=offset_name)
    return deformable_conv(data, offset, num_filter, name, no_bias=no_bias, impl=impl)
