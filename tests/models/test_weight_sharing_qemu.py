"""Weight sharing (issue: a module called twice got only its first call's gradient, silently). Every use of a
parameter adds to its gradient: a conv, a linear layer and a batch norm each called twice, and one Parameter held
by two Linear modules; several steps with momentum, so a wrong gradient would also show in the final weights."""
import pytest

from helpers import MODELS, check_report, needs_qemu
from odl.frontend.trace import trace
from odl.lower.lowering import TrainConfig, lower
from odl.verify.validate import validate

SHARED = MODELS / "shared_models.py"


def _check(rep):
    return check_report(rep)


@needs_qemu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_module_called_twice(precision):
    rep = validate(f"{SHARED}:SharedTwice", precision=precision, cores=8, input_shape="3x3x8x8", seed=3, steps=3,
                   cfg=TrainConfig(lr=0.05, momentum=0.9), log=lambda s: None)
    names = _check(rep)
    for p in ("shared.weight", "shared.bias", "mid.weight", "mid.bias", "bn.weight"):
        assert (p, "param_grad") in names and (p, "param_final") in names


@needs_qemu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_parameter_tied_across_modules(precision):
    rep = validate(f"{SHARED}:TiedModules", precision=precision, cores=3, input_shape="5x11", seed=1, steps=2,
                   log=lambda s: None)
    names = _check(rep)
    assert ("a.weight", "param_grad") in names


def test_shared_gradient_is_summed_in_the_lowering():
    """Lowering level: the second use of a parameter writes a partial gradient that is added to the first."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("shared_models", SHARED)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    g = trace(mod.SharedTwice(), (2, 3, 8, 8))
    prog = lower(g, "fp32", TrainConfig())
    adds = [c for c in prog.calls if c.kernel == "odl_copy" and c.fields["dst"].buf.name.startswith("grad_")]
    # shared.weight, shared.bias, mid.weight, mid.bias, bn.weight, bn.bias: one add each
    assert sorted(c.fields["dst"].buf.name for c in adds) == sorted(
        f"grad_{p}" for p in ("shared.weight", "shared.bias", "mid.weight", "mid.bias", "bn.weight", "bn.bias"))
    assert all(c.fields["accumulate"] == 1 for c in adds)
