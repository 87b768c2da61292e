"""The QAT checkpoint an int8 deploy starts from (`odl train --qat int8 --qat-bn frozen`): the float weights, the
observers' state (`odl.qat`), the input normalisation; and the weights' codes exactly as the fake-quant model
computes them (torch's per-channel FakeQuantize on the current weight)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from odl.common.errors import OdlError
from odl.lower.ops import fakequant as fqmod


@dataclass
class QatCheckpoint:
    path: str
    state: dict            # qat.<point>.scale / .zero_point / ... (the device's names)
    points: list           # activation points in graph order
    bn: str                # frozen | train
    normalize: dict | None # {"mean": [...], "std": [...]} per channel, or None


def read(path: str, model: torch.nn.Module, model_name: str) -> QatCheckpoint:
    """Load the checkpoint's weights into `model` (strictly) and its odl.qat entry; refuse anything else."""
    from odl.common.checkpoint import load_checkpoint, load_into
    ck = load_checkpoint(path, "--init")
    meta = ck.get("odl") if isinstance(ck, dict) else None
    qat = meta.get("qat") if isinstance(meta, dict) else None
    if not isinstance(qat, dict):
        raise OdlError(f"--deploy int8 --init {path}: the checkpoint has no odl.qat entry (the observers' scales and "
                       f"zero points); train it with `odl train --qat int8 --qat-bn frozen`")
    if qat.get("scheme") != "int8":
        raise OdlError(f"--deploy int8 --init {path}: odl.qat scheme is {qat.get('scheme')!r}, not 'int8'")
    if qat.get("layers"):
        raise OdlError(f"--deploy int8 --init {path}: the checkpoint was trained with --qat int8:{qat['layers']} "
                       f"(only some layers fake-quantized); an int8 deploy needs every layer quantized (--qat int8)")
    act, wgt = qat.get("activations", {}), qat.get("weights", {})
    if (act.get("qmin"), act.get("qmax"), act.get("qscheme")) != (0, 255, "per_tensor_affine") or \
            (wgt.get("qmin"), wgt.get("qmax"), wgt.get("qscheme")) != (-128, 127, "per_channel_symmetric"):
        raise OdlError(f"--deploy int8 --init {path}: quantization scheme {act} / {wgt} is not the one this deploy "
                       f"builds (activations per-tensor affine quint8 [0, 255], weights per-channel symmetric qint8)")
    load_into(model, ck["model"], path, model_name, "--init")
    return QatCheckpoint(path, dict(qat["state"]), list(qat["points"]), str(qat.get("bn")), meta.get("normalize"))


def act_qparams(ck: QatCheckpoint, point: str) -> tuple[np.float32, int]:
    """(scale, zero point) of an activation point as stored (evaluation does not move them)."""
    try:
        s = np.float32(torch.as_tensor(ck.state[fqmod.state_name(point, "scale")]).reshape(-1)[0])
        z = float(torch.as_tensor(ck.state[fqmod.state_name(point, "zero_point")]).reshape(-1)[0])
    except KeyError:
        raise OdlError(f"--deploy int8 --init {ck.path}: odl.qat has no scale / zero point for point '{point}'") from None
    if not (np.isfinite(s) and s > 0) or z != int(z) or not 0 <= z <= 255:
        raise OdlError(f"--deploy int8 --init {ck.path}: point '{point}' has scale {s} and zero point {z}: never "
                       f"observed or not a quint8 quantization")
    return s, int(z)


def weight_codes(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8, per-channel scales FP32) of a weight as the fake-quant model quantizes it at a forward: torch's
    per-channel symmetric FakeQuantize observing the current weight (averaging constant 1). Checked: the codes times
    the scales are torch's fake-quantized weight bit for bit."""
    from odl.lower.ops.fakequant_torch import weight_fake_quant
    fq = weight_fake_quant()
    with torch.no_grad():
        ref = fq(w.detach().float()).numpy()
    scale = fq.scale.numpy().astype(np.float32)
    w32 = w.detach().float().numpy().reshape(w.shape[0], -1)
    inv = (np.float32(1) / scale)[:, None]
    codes = np.clip(np.rint(w32 * inv), fqmod.WEIGHT["qmin"], fqmod.WEIGHT["qmax"]).astype(np.int8)
    back = (codes.astype(np.float32) * scale[:, None]).reshape(ref.shape)
    if not np.array_equal(back, ref):
        raise OdlError(f"weight of shape {tuple(w.shape)}: its int8 codes do not reproduce torch's fake-quantized "
                       f"weight ({int((back != ref).sum())} elements differ)")
    return codes.reshape(w.shape), scale


def fake_quant_model(model: torch.nn.Module, ck: QatCheckpoint, sample_shape: tuple) -> torch.nn.Module:
    """The host fake-quant model of the checkpoint in evaluation (what the deploy must agree with): the model's
    torch.fx trace with torch's FakeQuantize modules at odl's points, the checkpoint's observers loaded (the points
    travel by position between the device's names and the trace's, as odl train's reference does)."""
    from odl.frontend.trace import trace
    from odl.lower.ops.fakequant_torch import QatModel
    from odl.train.qat import renamed
    pristine = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        g = trace(model, (1, *sample_shape), frontend="fx")
    finally:
        model.load_state_dict(pristine)          # tracing runs the model: batch norm statistics would move
    ref = [fqmod.point_of(g, v) for v in fqmod.points(g)]
    if len(ref) != len(ck.points):
        raise OdlError(f"the torch.fx trace has other activation points ({', '.join(ref)}) than the checkpoint "
                       f"({', '.join(ck.points)})")
    net = QatModel(model, g)
    net.qat.load_state(renamed(ck.state, dict(zip(ck.points, ref))))
    return net.eval()
