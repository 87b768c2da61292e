"""The MCU-class zoo (odl/models/zoo.py): timm and torchvision networks, random init, 10 classes, through the torch.export
frontend. Every one converts without a refused op; on QEMU each validates in FP16 with --train auto (or is refused
for memory alone, with the bytes over): slow, minutes each (docs/frontend.md lists the measured results)."""
import importlib.util

import pytest

from helpers import needs_qemu
from odl.common.errors import OdlError
from odl.lower.lowering import TrainConfig

pytestmark = pytest.mark.skipif(importlib.util.find_spec("timm") is None or
                                importlib.util.find_spec("torchvision") is None,
                                reason="timm / torchvision not installed (scripts/setup.sh installs them)")

from odl.models import zoo  # noqa: E402

QUICK = "timm:mobilenetv3_small_050"


@pytest.mark.parametrize("spec", [pytest.param(s, marks=() if s == QUICK else pytest.mark.slow) for s in zoo.ZOO])
def test_zoo_converts(spec):
    from odl.frontend.export import trace_export
    m = zoo.build(spec)
    g = trace_export(m, (2, 3, 32, 32))
    assert g.params == {k: tuple(v.shape) for k, v in m.named_parameters()}
    assert g.shapes[g.output] == (2, 10)
    # parameters keep their state_dict names, layers their module paths
    assert {p for n in g.nodes for p in n.params.values()} == set(g.params)
    convs = [n for n in g.nodes if n.op in ("conv2d", "dwconv2d")]
    assert all(n.params["weight"] == f"{n.module}.weight" for n in convs)


def test_torchvision_imports_beside_cpu_torch():
    zoo.ensure_torchvision()
    import torchvision.models as tvm
    assert tvm.mobilenet_v2(weights=None, num_classes=10, width_mult=0.35) is not None


def test_unknown_zoo_name():
    with pytest.raises(OdlError, match="torchvision models odl knows"):
        zoo.build("torchvision:resnet152")


@needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize("spec", list(zoo.ZOO))
def test_zoo_validates_fp16_auto(spec):
    from odl.verify.validate import validate
    try:
        rep = validate(spec, precision="fp16", cores=8, input_shape="2x3x64x64", cfg=TrainConfig(train="auto"),
                       log=lambda s: None)
    except OdlError as e:          # acceptable only as a memory refusal, with the bytes over
        assert "over the budget" in str(e) or "over the target's budget" in str(e), str(e)
        return
    bad = [(t["name"], t["kind"], t["rel_l2"], t.get("torch_rel_l2")) for t in rep["tensors"] if not t["passed"]]
    assert rep["passed"], bad
    assert rep["train_auto"]["arena_bytes"] <= rep["memory"]["budget_bytes"]
