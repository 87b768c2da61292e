"""--store fp8 on the device against the float8-cast PyTorch reference (odl validate): the tensors by the usual rule,
the device's scales bitwise equal to the host's, its recorded amax, and the memory beside --store compute."""
import pytest

from helpers import needs_qemu
from odl.lower.lowering import TrainConfig
from odl.verify.validate import validate


def _validate(model, **kw):
    return validate(model, precision=kw.pop("precision", "fp16"), cfg=TrainConfig(store="fp8"), log=lambda s: None,
                    **kw)


def _check(rep, kept_ratio):
    assert rep["passed"] is True, [t for t in rep["tensors"] if not t["passed"]]
    assert rep["config"]["store"] == "fp8" and rep["fp8"]["scales_equal"] is True
    kinds = {t["kind"] for t in rep["tensors"]}
    assert {"amax_e4m3", "amax_e5m2", "param_grad", "input_grad"} <= kinds
    m = rep["memory"]
    assert m["kept_ratio"] <= kept_ratio and m["arena_bytes"] < m["store_compute"]["arena_bytes"]
    # besides the FP8 copies: the FP32 batch-norm statistics and dropout's byte masks
    assert m["kept_fp8_bytes"] >= 0.85 * (m["kept_for_backward_bytes"] - m["kept_stats_bytes"])
    assert "float8" in rep["reference"]["torch"]


@needs_qemu
def test_tinycnn_fp8_validates():
    """The default suite's one emulator run of --store fp8 (the others are slow: ResNet8 ~25 s, DS-CNN ~19 s,
    MobileNetV1-VWW ~60 s on an idle machine)."""
    rep = _validate("tinycnn", cores=3)
    _check(rep, 0.5)


@needs_qemu
@pytest.mark.slow
def test_a_wrong_scale_fails(monkeypatch):
    """The host expecting other scales than the device computed must fail the step, not pass it."""
    from odl.verify import fp8ref
    real = fp8ref.scales

    def doubled(plan, state):
        a, g = real(plan, state)
        return {k: 2 * v for k, v in a.items()}, g
    monkeypatch.setattr(fp8ref, "scales", doubled)
    rep = _validate("tinycnn", cores=2)
    assert rep["passed"] is False and rep["fp8"]["scales_equal"] is False


@needs_qemu
@pytest.mark.slow
def test_dscnn_fp8_validates():
    """DS-CNN (dropout, depthwise convolutions) in FP16 with FP8 storage: about half the bytes kept for the
    backward (docs/formats.md)."""
    _check(_validate("dscnn"), 0.54)


@needs_qemu
@pytest.mark.slow
def test_resnet8_fp8_validates():
    """ResNet8 (residual blocks: gradients that wait for the main branch) in FP16 with FP8 storage."""
    _check(_validate("resnet8"), 0.51)


@needs_qemu
@pytest.mark.slow
def test_mobilenetv1_vww_fp8_validates():
    _check(_validate("mobilenetv1_vww"), 0.56)


@needs_qemu
@pytest.mark.slow
def test_fp32_and_flat_fp8_validate():
    _check(_validate("tinycnn", precision="fp32", memory="flat"), 0.25)


@needs_qemu
def test_tinycnn_fp8_per_layer_validates():
    """--store fp8:c2 stores only what c2's backward reads (its input, the first ReLU's output) in E4M3 and c2's
    output gradient in E5M2; the float8 reference casts at the same points, and the memory sits between
    --store compute and --store fp8."""
    rep = validate("tinycnn", precision="fp16", cores=3, cfg=TrainConfig(store="fp8", store_layers="c2"),
                   log=lambda s: None)
    assert rep["config"]["store"] == "fp8:c2"
    assert rep["passed"] is True, [t for t in rep["tensors"] if not t["passed"]]
    assert rep["fp8"]["scales_equal"] is True and "float8" in rep["reference"]["torch"]
    assert rep["fp8"]["activation_values"] == ["relu"] and rep["fp8"]["gradient_values"] == ["convolution_1"]
    assert {"amax_e4m3", "amax_e5m2", "param_grad", "input_grad"} <= {t["kind"] for t in rep["tensors"]}
    m = rep["memory"]
    assert 0 < m["kept_fp8_bytes"] < m["kept_for_backward_bytes"]      # the second ReLU's output stays FP16
    assert m["kept_for_backward_bytes"] < m["store_compute"]["kept_for_backward_bytes"]
