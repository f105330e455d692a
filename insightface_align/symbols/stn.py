"""The STN inside transformer of the paper's Fig. 4(a), the alternative to deformable convs.

A localisation network regresses an affine theta from the stem features; the features
are warped by theta before the stacks, and every stack's heatmap is warped back by
theta's inverse, so predictions and targets stay in the input frame. The last layer
starts at zero weights and an identity bias, so training starts from "no transform".
"""
from __future__ import annotations

import mxnet as mx
import numpy as np


IDENTITY_THETA = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def localisation_theta(body, channels, size, multiplier, name="stn"):
    """(B, 6) affine parameters from (B, channels, size, size) features; starts at identity."""
    body = conv_bn_relu_stride2(body, max(int(128 * multiplier), 16), name + "_loc1")
    body = conv_bn_relu_stride2(body, max(int(128 * multiplier), 16), name + "_loc2")
    body = conv_bn_relu_stride2(body, channels, name + "_loc3")
    body = mx.sym.Flatten(body)
    body = mx.sym.FullyConnected(body, num_hidden=max(int(1024 * multiplier), 32), name=name + "_fc1")
    body = mx.sym.Activation(body, act_type="relu", name=name + "_fc1_relu")
    weight = mx.sym.Variable(name + "_theta_weight", init=mx.init.Zero())
    bias = mx.sym.Variable(name + "_theta_bias", init=mx.init.Constant(np.array(IDENTITY_THETA, dtype=np.float32)))
    return mx.sym.FullyConnected(body, weight=weight, bias=bias, num_hidden=6, name=name + "_theta")


def conv_bn_relu_stride2(data, num_filter, name):
    body = mx.sym.Convolution(data=data, num_filter=num_filter, kernel=(3, 3), stride=(2, 2), pad=(1, 1),
                              no_bias=True, name=name + "_conv")
    body = mx.sym.BatchNorm(data=body, fix_gamma=False, eps=2e-5, momentum=0.9, name=name + "_bn")
    return mx.sym.Activation(body, act_type="relu", name=name + "_relu")


def warp(data, theta, size):
    """Sample `data` at theta-mapped normalised coordinates (output grid size x size)."""
    grid = mx.sym.GridGenerator(data=theta, transform_type="affine", target_shape=(size, size))
    return mx.sym.BilinearSampler(data=data, grid=grid)


def invert_theta(theta):
    """Inverse of a batch of 2x3 affine maps [[a, b, c], [d, e, f]], element-wise in the graph."""
    a, b, c, d, e, f = (mx.sym.slice_axis(theta, axis=1, begin=i, end=i + 1) for i in range(6))
    det = a * e - b * d
    inv = [e, -b, b * f - c * e, -d, a, c * d - a * f]
    return mx.sym.broadcast_div(mx.sym.concat(*inv, dim=1), det)


__all__ = ["localisation_theta", "warp", "invert_theta"]
