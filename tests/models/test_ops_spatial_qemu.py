"""The spatial and normalisation ops on QEMU (one small model per op family, tests/models/ops_models_spatial.py),
validated tensor by tensor against PyTorch in both precisions on 1 and 8 harts, with batches above 1, odd sizes,
stride 2 on odd inputs and channel counts not divisible by 8; and the settings they still refuse. The default
suite runs each model once, precisions and hart counts alternating between models (DEFAULT); the other three
combinations of each are marked slow (shape coverage lives in tests/kernels/test_kernels_native_spatial.py)."""
import pytest
import torch.nn as nn
import torch.nn.functional as F

from helpers import MODELS, needs_qemu
from odl.common.errors import OdlError
from odl.frontend.trace import trace
from odl.lower.lowering import TrainConfig
from odl.verify.validate import validate

SPATIAL = MODELS / "ops_models_spatial.py"
CASES = {
    "ConvFamily1d": "3x6x13",      # Conv1d strided / grouped+dilated 'same' / depthwise / pointwise
    "ConvFamily2d": "2x4x7x9",     # dilated, groups=2 stride 2 on odd input, dilated depthwise
    "PoolFamily": "3x3x7x7",       # 1-D pools, ceil_mode, adaptive pools to non-dividing sizes
    "NormFamily": "3x3x5x7",       # GroupNorm, InstanceNorm2d (affine / not), LayerNorm (last dim, [C,H,W])
    "UpsampleFamily": "2x3x5x4",   # nearest / bilinear (both align_corners) / linear, ConvTranspose2d
}
DEFAULT = {"ConvFamily1d": ("fp16", 8), "ConvFamily2d": ("fp32", 1), "PoolFamily": ("fp16", 1),
           "NormFamily": ("fp32", 8), "UpsampleFamily": ("fp16", 8)}
RUNS = [pytest.param(m, p, c, marks=() if DEFAULT[m] == (p, c) else pytest.mark.slow, id=f"{m}-{p}-{c}")
        for m in sorted(CASES) for p in ("fp32", "fp16") for c in (1, 8)]


@needs_qemu
@pytest.mark.parametrize("model,precision,cores", RUNS)
def test_spatial_models(model, precision, cores):
    rep = validate(f"{SPATIAL}:{model}", precision=precision, cores=cores, input_shape=CASES[model], seed=3,
                   log=lambda s: None)
    bad = [(t["name"], t["kind"], t["rel_l2"], t["cosine"]) for t in rep["tensors"] if not t["passed"]]
    assert rep["passed"], (bad, rep["loss"])
    kinds = {t["kind"] for t in rep["tensors"]}
    assert {"output", "param_grad", "input_grad", "param_updated"} <= kinds


class _One(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


class _Interp(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bicubic")


@pytest.mark.parametrize("layer,shape,match", [
    (nn.ConvTranspose2d(4, 4, 3, groups=2), (1, 4, 5, 5), r"'layer' \(ConvTranspose2d\): groups=2"),
    (nn.InstanceNorm2d(3, track_running_stats=True), (2, 3, 4, 4), r"'layer' \(InstanceNorm2d\): track_running"),
    (nn.Upsample(scale_factor=2, mode="bicubic"), (1, 2, 3, 3), r"'layer' \(Upsample\): mode='bicubic'"),
    (nn.Upsample(scale_factor=2, mode="nearest-exact"), (1, 2, 3, 3), r"'layer' \(Upsample\): mode='nearest-exact'"),
    (nn.MaxPool1d(3, dilation=2), (1, 2, 9), r"'layer' \(MaxPool1d\): dilation"),
    (nn.Conv1d(2, 4, 3, padding_mode="reflect"), (1, 2, 9), r"'layer' \(Conv1d\): padding_mode='reflect'"),
])
def test_spatial_refusals(layer, shape, match, monkeypatch):
    monkeypatch.setenv("ODL_FRONTEND", "fx")   # the fx frontend's messages (export's: tests/unit/test_frontend_export.py)
    with pytest.raises(OdlError, match=match):
        trace(_One(layer), shape)


def test_interpolate_refusal(monkeypatch):
    monkeypatch.setenv("ODL_FRONTEND", "fx")   # the fx frontend's messages (export's: tests/unit/test_frontend_export.py)
    with pytest.raises(OdlError, match=r"'interpolate' \(interpolate\): mode='bicubic'"):
        trace(_Interp(), (1, 2, 3, 3))


@needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize("variants", ["conv2d.forward=tn,conv2d.weight_grad=outer",
                                      "conv2d.forward=nn,conv2d.weight_grad=dot"])
def test_grouped_dilated_variants_chunked(monkeypatch, variants):
    """Grouped / dilated convs and ConvTranspose2d with every conv variant forced, and with an im2col scratch
    so small that every layer runs in one-row chunks."""
    monkeypatch.setenv("ODL_VARIANTS", variants)
    for model in ("ConvFamily1d", "ConvFamily2d", "UpsampleFamily"):
        rep = validate(f"{SPATIAL}:{model}", precision="fp16", cores=3, input_shape=CASES[model], seed=4,
                       cfg=TrainConfig(im2col_bytes=200), log=lambda s: None)
        assert rep["passed"], [(t["name"], t["rel_l2"]) for t in rep["tensors"] if not t["passed"]]


class _PadChannels1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(5, 4, 3)

    def forward(self, x):
        return self.c(F.pad(x, (1, 1, 1, 1)))   # pads the channels of [N, C, L] too


def test_conv1d_names_and_pad_refusal(monkeypatch):
    monkeypatch.setenv("ODL_FRONTEND", "fx")   # the fx frontend's messages (export's: tests/unit/test_frontend_export.py)
    g = trace(_One(nn.Conv1d(3, 6, 3, groups=3, dilation=2)), (2, 3, 11))
    assert [n.op for n in g.nodes] == ["conv1d"] and g.nodes[0].attrs["groups"] == 3
    g = trace(_One(nn.Conv1d(4, 4, 3, groups=4)), (2, 4, 11))
    assert [n.op for n in g.nodes] == ["dwconv1d"]
    with pytest.raises(OdlError, match=r"'pad' .*only pad the length"):
        trace(_PadChannels1d(), (2, 3, 9))


@needs_qemu
@pytest.mark.slow
def test_kws_conv1d_fp16_8_harts():
    """A keyword-spotting net written with Conv1d over MFCC frames (the form issue 10 found refused)."""
    rep = validate(f"{SPATIAL}:KWSConv1d", precision="fp16", cores=8, input_shape="2x10x49", seed=1,
                   log=lambda s: None)
    assert rep["passed"], [(t["name"], t["rel_l2"]) for t in rep["tensors"] if not t["passed"]]
