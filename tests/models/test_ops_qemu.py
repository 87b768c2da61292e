"""Every supported op, on QEMU, on 1 and 8 harts, fp32 and fp16: user model files that combine them, validated
tensor by tensor against PyTorch (odl.verify.validate), with batches above 1 and awkward shapes."""
import pytest

from helpers import MODELS, check_report, needs_qemu
from odl.lower.lowering import TrainConfig
from odl.verify.validate import validate

OPS = MODELS / "ops_models.py"
CASES = {
    "ConvBNStack": "3x3x7x7",          # conv/BN/ReLU, even-kernel 'same' padding, stride 2 without padding
    "DepthwiseSeparable": "2x2x9x11",  # depthwise s1/s2, pointwise, ReLU6, global average pool
    "GatherConvs": "2x3x21x19",        # DMA-gathered im2col: unpadded, strided (odd input), non-square kernel
    "ResidualPool": "4x3x13x13",       # residual add, strided 1x1 projection, max/avg pooling, a value used twice
    "MLP": "3x23",                     # linear layers, dropout (device PRNG, mask reproduced on the host)
    "tiny_spatial": "3x4x3x3",         # 1x1 spatial, bias-free linear, a factory function
    "NameClash": "2x6",                # parameter names whose C identifiers collide
}


def check(rep):
    check_report(rep)


@needs_qemu
@pytest.mark.parametrize("cores", [1, 8])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("model", sorted(CASES))
def test_op_models(model, precision, cores):
    rep = validate(f"{OPS}:{model}", precision=precision, cores=cores, input_shape=CASES[model], seed=5,
                   log=lambda s: None)
    check(rep)
    kinds = {t["kind"] for t in rep["tensors"]}
    assert {"output", "param_grad", "param_updated"} <= kinds


@needs_qemu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_frozen_batchnorm(precision):
    rep = validate(f"{OPS}:ConvBNStack", precision=precision, cores=3, input_shape="3x3x7x7",
                   cfg=TrainConfig(bn="frozen"), log=lambda s: None)
    check(rep)
    # frozen BN keeps its running statistics
    for t in rep["tensors"]:
        assert t["kind"] != "state_updated" or t["max_abs"] < 1e-3


@needs_qemu
def test_mse_adam_weight_decay_three_steps():
    rep = validate(f"{OPS}:MLP", precision="fp16", cores=8, input_shape="3x23", steps=3,
                   cfg=TrainConfig(loss="mse", optimizer="adam", weight_decay=0.01), log=lambda s: None)
    check(rep)
    assert len(rep["steps"]) == 3 and all(s["passed"] for s in rep["steps"])
    assert any(t["kind"] == "param_final" for t in rep["tensors"])


@needs_qemu
def test_sgd_momentum_sparse_update_steps():
    """Momentum state stays on the device between steps; frozen layers get no gradient and do not change."""
    rep = validate(f"{OPS}:ResidualPool", precision="fp32", cores=8, input_shape="4x3x13x13", steps=3,
                   cfg=TrainConfig(momentum=0.9, weight_decay=1e-3, train=r"b1|bn|fc"), log=lambda s: None)
    check(rep)
    assert set(rep["trainable"]) == {"b1.weight", "b1.bias", "bn.weight", "bn.bias", "fc.weight", "fc.bias"}
    grads = {t["name"] for t in rep["tensors"] if t["kind"] == "param_grad"}
    assert grads == set(rep["trainable"])
    # input gradients stop where nothing earlier trains: nothing before b1's input is differentiated
    names = {t["name"] for t in rep["tensors"] if t["kind"] == "input_grad"}
    assert "c0" not in names and "a1" not in names


@needs_qemu
@pytest.mark.parametrize("variants", ["conv2d.forward=nn,conv2d.weight_grad=dot",
                                      "conv2d.forward=tn,conv2d.weight_grad=outer"])
def test_conv_variants(monkeypatch, variants):
    """Every implementation the lowering can choose between is itself validated (ODL_VARIANTS forces it)."""
    monkeypatch.setenv("ODL_VARIANTS", variants)
    for precision in ("fp32", "fp16"):
        check(validate(f"{OPS}:ResidualPool", precision=precision, cores=3, input_shape="4x3x13x13", seed=2,
                       log=lambda s: None))


@needs_qemu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_conv_bias_into_batchnorm1d(precision):
    """The conv bias gradient before a BatchNorm1d over the flattened features cancels to ~0: it is judged against
    the noise floor and must be no noisier than PyTorch's (the blocked, compensated sums of kernels_c/)."""
    rep = validate(f"{OPS}:ConvBiasBN1d", precision=precision, cores=8, input_shape="4x3x16x16", seed=5,
                   log=lambda s: None)
    check(rep)
    row = next(t for t in rep["tensors"] if t["name"] == "conv.bias" and t["kind"] == "param_grad")
    assert row.get("floor") and row["rel_l2"] <= 2 * row["torch_rel_l2"], row
