"""Small layer helpers with the original release's naming scheme.

Every parameter name produced here (NAME_conv_weight, NAME_bn_gamma, ...) matches the
release so checkpoints load either way. BatchNorm: fix_gamma False, eps 2e-5,
momentum 0.9, as the release.
"""
from __future__ import annotations

import mxnet as mx

from . import ext

BN_MOMENTUM = 0.9
BN_EPS = 2e-5


def conv(data, num_filter, name, kernel=1, stride=1, pad=None, groups=1, no_bias=True, weight_init=None):
    """Square convolution named `name` (parameters NAME_weight[, NAME_bias])."""
    pad = (kernel - 1) // 2 if pad is None else pad
    kwargs = {}
    if weight_init is not None:
        kwargs["weight"] = mx.sym.Variable(name + "_weight", init=weight_init)
    return mx.sym.Convolution(data=data, num_filter=num_filter, kernel=(kernel, kernel), stride=(stride, stride),
                              pad=(pad, pad), num_group=groups, no_bias=no_bias, workspace=256, name=name, **kwargs)


def bn(data, name):
    return mx.sym.BatchNorm(data=data, fix_gamma=False, eps=BN_EPS, momentum=BN_MOMENTUM, name=name)


def relu(data, name=None):
    return mx.sym.Activation(data=data, act_type="relu", name=name)


def conv_bn_relu(data, num_filter, name, kernel=3, groups=1, with_act=True):
    """conv (no bias) -> BN -> ReLU as NAME_conv / NAME_bn / NAME_relu (the release's unit)."""
    body = bn(conv(data, num_filter, name + "_conv", kernel=kernel, groups=groups), name + "_bn")
    return relu(body, name + "_relu") if with_act else body


def bilinear_deconv_x2(data, num_filter, name):
    """2x2 stride-2 Deconvolution (no bias) whose weights start as bilinear upsampling."""
    weight = mx.sym.Variable(name + "_weight", init=mx.init.Bilinear())
    return mx.sym.Deconvolution(data=data, weight=weight, num_filter=num_filter, kernel=(2, 2), stride=(2, 2),
                                no_bias=True, workspace=256, name=name)


def maxpool2(data):
    return mx.sym.Pooling(data=data, kernel=(2, 2), stride=(2, 2), pad=(0, 0), pool_type="max")


def upsample_nearest2(data, name):
    return mx.sym.UpSampling(data, scale=2, sample_type="nearest", workspace=512, num_args=1, name=name)


def fused_mean(inputs, name):
    """(sum of inputs, narrower ones repeated along channels) / len(inputs) in one pass.

    Equals Concat(y, y) + add_n + divide bit for bit (`sdu_mean`, symbols/ext); CPU only.
    """
    ext.load()
    return mx.sym.sdu_mean(*inputs, num_args=len(inputs), name=name)
