"""`odl train --qat int8`: the host reference as the same fake-quantized model (torch's FakeQuantize modules at the
device's points, odl/lower/ops/fakequant_torch.py), and the observers' state in checkpoints.

The device names an observer after its point in the graph it lowered (torch.export's value names, e.g.
`qat.relu_1.scale`, `qat.input.min_val`, `qat.conv1.weight.zero_point`); the host reference runs the model's
torch.fx trace, whose activation values are named otherwise: the two lists of points are the same points in the same
graph order (checked), and states travel between them by position. Checkpoints hold the device's state under the
device's names in `odl.qat` (with the quantization scheme), for an int8 deploy to start from."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from odl.common.errors import OdlError
from odl.lower.ops import fakequant as fqmod


def device_points(prog) -> list[str]:
    """The device's activation points (state names), in graph order."""
    return [n.attrs["point"] for n in prog.graph.nodes if n.op == "fakequant"]


def reference_net(model: nn.Module, opts, sample_shape: tuple, prog) -> nn.Module:
    """`model` (the reference's own copy) wrapped with torch's fake quantization at the device's points."""
    from odl.frontend.trace import trace
    from odl.lower.ops.fakequant_torch import QatModel
    pristine = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        g = trace(model, (opts.batch, *sample_shape), frontend="fx")
    except OdlError as e:
        raise OdlError(f"--qat int8: the host reference runs the model's torch.fx trace, which failed ({e}); "
                       f"use --reference none") from None
    finally:
        model.load_state_dict(pristine)
    pattern = opts.cfg.qat_layers
    net = QatModel(model, g, pattern)
    dev = device_points(prog)
    ref = [fqmod.point_of(g, v) for v in fqmod.points(g, pattern)]
    if len(dev) != len(ref) or set(net.qat.wgt) != set(fqmod.weights(prog.graph, pattern)):
        raise OdlError(f"--qat int8: the host reference would fake-quantize other points than the device "
                       f"(device: {', '.join(dev)}; torch.fx trace: {', '.join(ref)}); use --reference none")
    net.point_names = dict(zip(dev, ref))     # device point -> reference point
    return net


def device_state(fw, blob: bytes) -> dict[str, torch.Tensor]:
    """The observers' state on the device (FP32), by the device's names."""
    from odl.resident import shared_values
    vals = shared_values(fw, blob)
    main = fw.programs[0].prog
    return {k: torch.from_numpy(np.array(vals[b.name], np.float32).reshape(b.shape))
            for k, b in main.state.items() if k.startswith(fqmod.PREFIX)}


def renamed(state: dict, names: dict[str, str]) -> dict:
    """A state under other point names (names: point -> point; weights keep theirs)."""
    out = {}
    for k, v in state.items():
        point, what = k[len(fqmod.PREFIX):].rsplit(".", 1)
        out[fqmod.state_name(names.get(point, point), what)] = v
    return out


def checkpoint_entry(fw, blob: bytes, cfg) -> dict:
    """odl.qat of a checkpoint: the scheme, the points and the observers' state (what an int8 deploy needs)."""
    main = fw.programs[0].prog
    return qat_entry(cfg.qat, cfg.bn, device_points(main), fqmod.weights(main.graph, cfg.qat_layers),
                     device_state(fw, blob), cfg.qat_layers)


def qat_entry(scheme: str, bn: str, points: list, quantized_weights: list, state: dict, layers: str = "") -> dict:
    """odl.qat from its parts (state by the device's names; layers: the --qat int8:REGEX pattern, "" for all)."""
    return {"scheme": scheme, "layers": layers or None, "bn": bn,
            "activations": {**fqmod.ACT, "dtype": "quint8", "qscheme": "per_tensor_affine",
                            "observer": "MovingAverageMinMaxObserver"},
            "weights": {**fqmod.WEIGHT, "dtype": "qint8", "qscheme": "per_channel_symmetric", "ch_axis": 0,
                        "observer": "MovingAveragePerChannelMinMaxObserver"},
            "points": points, "quantized_weights": quantized_weights, "state": state}


def host_model(model: nn.Module, fw, blob: bytes, opts, sample_shape: tuple) -> nn.Module:
    """The trained weights on the host with the device's observers: what the device evaluates."""
    net = reference_net(model, opts, sample_shape, fw.programs[0].prog)
    net.qat.load_state(renamed(device_state(fw, blob), net.point_names))
    return net
