"""Zero padding (nn.ZeroPad2d, F.pad with zeros) folded into the convolutions that consume it: im2col and the
direct depthwise kernels already read zeros outside the image, so a pad only shifts their top/left offsets
(bottom/right follow from the output size). A pad feeding anything else is refused."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from odl.common.errors import OdlError
from odl.lower.ops.registry import FUNCTIONS, MODULES, register


def _norm(node_name, pad):
    p = tuple(int(v) for v in pad) if isinstance(pad, (tuple, list)) else (int(pad),) * 4
    if len(p) == 2:
        p = p + (0, 0)
    if len(p) != 4 or min(p) < 0:
        raise OdlError(f"graph node '{node_name}' (pad): only non-negative 2-D padding (left, right, top, bottom) "
                       f"is supported, got {pad}")
    return dict(left=p[0], right=p[1], top=p[2], bottom=p[3])


def convert_module(node_name, mod, in_shapes, out_shape):
    return _norm(node_name, mod.padding), {}


def convert_function(node_name, fx, in_shapes, out_shape):
    mode = fx.kwargs.get("mode", fx.args[2] if len(fx.args) > 2 else "constant")
    value = fx.kwargs.get("value", fx.args[3] if len(fx.args) > 3 else 0.0)
    if mode != "constant" or (value or 0.0) != 0.0:
        raise OdlError(f"graph node '{node_name}' (pad): only zero padding is supported")
    return _norm(node_name, fx.args[1] if len(fx.args) > 1 else fx.kwargs["pad"]), {}


class Pad:
    name = "pad"

    def forward(self, node, L):
        raise OdlError(f"{node.describe()}: zero padding is only supported directly before a convolution")

    backward = forward


def fold(graph):
    """Fold every pad node into its consumers (convolutions); called by the frontend after tracing."""
    for pad in [n for n in graph.nodes if n.op == "pad"]:
        users = graph.consumers(pad.name)
        if not users or any(u.op not in ("conv2d", "dwconv2d", "conv1d", "dwconv1d") for u in users) or graph.output == pad.name:
            raise OdlError(f"{pad.describe()}: zero padding is only supported directly before a convolution")
        if any(u.op in ("conv1d", "dwconv1d") for u in users) and (pad.attrs["top"] or pad.attrs["bottom"]):
            raise OdlError(f"{pad.describe()}: a pad before a Conv1d may only pad the length (last dim)")
        for u in users:
            u.inputs = [pad.inputs[0] if v == pad.name else v for v in u.inputs]
            u.attrs["pt"] += pad.attrs["top"]
            u.attrs["pl"] += pad.attrs["left"]
        graph.nodes.remove(pad)


register(Pad())
MODULES[nn.ZeroPad2d] = ("pad", convert_module)
FUNCTIONS[F.pad] = ("pad", convert_function)
