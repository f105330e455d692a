"""Building blocks (paper Fig. 3): resnet bottleneck, inception-resnet, HPM and CAB.

Each block maps c_in to c channels. `build_block` is the one entry point; it applies
the release's fall-backs (inception -> resnet and cab -> hpm when c_in != c).
"""
from __future__ import annotations

import mxnet as mx

from .layers import bn, conv, conv_bn_relu, fused_mean, relu


def resnet_block(data, c_in, c, name):
    """Pre-activation bottleneck: BN-ReLU-1x1(c/2)-BN-ReLU-3x3(c/2)-BN-ReLU-1x1(c) + shortcut."""
    act1 = relu(bn(data, name + "_bn1"), name + "_relu1")
    body = conv(act1, int(c * 0.5), name + "_conv1", kernel=1)
    body = conv(relu(bn(body, name + "_bn2"), name + "_relu2"), int(c * 0.5), name + "_conv2", kernel=3)
    body = conv(relu(bn(body, name + "_bn3"), name + "_relu3"), c, name + "_conv3", kernel=1)
    shortcut = data if c_in == c else conv(act1, c, name + "_sc", kernel=1)
    return body + shortcut


def hpm_block(data, c_in, c, name):
    """Hierarchical, parallel, multi-scale block: three chained 3x3 convs (c/2, c/4, c/4), concatenated."""
    act1 = relu(bn(data, name + "_bn1"), name + "_relu1")
    conv1 = conv(act1, int(c * 0.5), name + "_conv1", kernel=3)
    conv2 = conv(relu(bn(conv1, name + "_bn2"), name + "_relu2"), int(c * 0.25), name + "_conv2", kernel=3)
    conv3 = conv(relu(bn(conv2, name + "_bn3"), name + "_relu3"), int(c * 0.25), name + "_conv3", kernel=3)
    body = mx.sym.Concat(conv1, conv2, conv3)
    shortcut = data if c_in == c else conv(act1, c, name + "_sc", kernel=1)
    return body + shortcut


def inception_block(data, c_in, c, name):
    """Inception-ResNet (block35): towers 1x1 | 1x1-3x3 | 1x1-3x3-3x3, 1x1 merge, residual add, ReLU."""
    if c_in != c:
        return resnet_block(data, c_in, c, name)
    name = name + "_block35"
    q = int(c * 0.25)
    tower0 = conv_bn_relu(data, q, name + "_conv", kernel=1)
    tower1 = conv_bn_relu(conv_bn_relu(data, q, name + "_conv1_0", kernel=1), q, name + "_conv1_1", kernel=3)
    tower2 = conv_bn_relu(data, q, name + "_conv2_0", kernel=1)
    tower2 = conv_bn_relu(tower2, int(c * 0.375), name + "_conv2_1", kernel=3)
    tower2 = conv_bn_relu(tower2, int(c * 0.5), name + "_conv2_2", kernel=3)
    mixed = mx.sym.Concat(tower0, tower1, tower2)
    out = conv_bn_relu(mixed, c, name + "_conv_out", kernel=1, with_act=False)
    return relu(data + 1.0 * out)


class _ChannelAggregation:
    """CAB (paper Fig. 3d): a 4x4 grid of nodes (w, h) symmetric in channels.

    The bottom row halves the channels three times; every other node averages the
    same-width node of the row below (through a depthwise unit on odd rows) with the
    half-width node, doubled by replication. Memoised so shared nodes are built once.
    """

    GRID = 4

    def __init__(self, data, c, name, fused=False):
        self.name = name
        self.fused = fused
        self.nodes = {(self.GRID, self.GRID): (data, c)}

    def node(self, w, h):
        if (w, h) in self.nodes:
            return self.nodes[(w, h)]
        tag = "%s_w%d_h%d" % (self.name, w, h)
        if h == self.GRID:
            prev, c = self.node(w + 1, h)
            out = (conv_bn_relu(prev, int(c * 0.5), tag + "_1"), int(c * 0.5))
        else:
            x, c = self.node(w + 1, h + 1)
            y, _ = self.node(w, h + 1)
            if h % 2 == 1 and h != w:
                x = conv_bn_relu(x, c, tag + "_2", groups=c)
            if self.fused:
                out = (fused_mean([x, y], tag + "_mean"), c)
            else:
                out = (mx.sym.add_n(x, mx.sym.concat(y, y, dim=1), name=tag + "_add") / 2, c)
        self.nodes[(w, h)] = out
        return out


def cab_block(data, c_in, c, name, fused_mean=False):
    """Channel Aggregation Block; HPM when the channel count changes (as the release)."""
    if c_in != c:
        return hpm_block(data, c_in, c, name)
    return _ChannelAggregation(data, c, name, fused_mean).node(1, 1)[0]


BLOCKS = {"resnet": resnet_block, "inception": inception_block, "hpm": hpm_block, "cab": cab_block}


def build_block(kind, data, c_in, c, name, fused_mean=False):
    """Dispatch to a block by its config name; fused_mean selects `sdu_mean` for CAB nodes."""
    if kind == "cab":
        return cab_block(data, c_in, c, name, fused_mean)
    return BLOCKS[kind](data, c_in, c, name)
