"""The elementwise ops of the torch.export frontend (affine, clamp, broadcast multiply, slice, split, cat, channel
shuffle, bias) in code written as timm / torchvision write it (tests/models/export_models.py), validated tensor by
tensor against PyTorch on QEMU."""
import pytest

from helpers import MODELS, needs_qemu
from odl.verify.validate import validate


def _check(rep):
    bad = [(t["name"], t["kind"], t["rel_l2"], t["cosine"]) for t in rep["tensors"] if not t["passed"]]
    assert rep["passed"], (bad, rep["loss"])


@needs_qemu
@pytest.mark.parametrize("precision,cores", [("fp32", 8), pytest.param("fp16", 3, marks=pytest.mark.slow)])
def test_real_code_validates(precision, cores):
    """SE gate (broadcast multiply), hard-swish / hard-sigmoid, clamp, scalar affine, channel slice / split / cat,
    functional batch norm with its running statistics, F.linear: every tensor against PyTorch."""
    rep = validate(f"{MODELS / 'export_models.py'}:RealCode", precision=precision, cores=cores, seed=2,
                   log=lambda s: None)
    _check(rep)
    names = {(t["name"], t["kind"]) for t in rep["tensors"]}
    for want in [("mul", "activation"), ("se.gate", "input_grad"), ("clamp", "input_grad"), ("fc_w", "param_grad"),
                 ("ghost.cheap.weight", "param_grad"), ("bn1.running_var", "state_updated"), ("cat", "input_grad")]:
        assert want in names, want
    grads = {t["name"]: t for t in rep["tensors"] if t["kind"] == "param_grad"}
    assert not grads["ghost.cheap.weight"].get("floor")     # the slice after the cat passes it a real gradient


