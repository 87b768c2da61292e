"""An update chosen by --train auto (odl/plan/sparse.py) validated tensor by tensor on QEMU."""
from helpers import MODELS, needs_qemu
from odl.lower.lowering import TrainConfig
from odl.verify.validate import validate


@needs_qemu
def test_auto_update_validates():
    rep = validate(f"{MODELS / 'ops_models.py'}:ConvBNStack", input_shape="3x3x7x7", precision="fp32", cores=8,
                   cfg=TrainConfig(train="auto"), budget=26000, seed=1, log=lambda s: None)
    bad = [(t["name"], t["kind"], t["rel_l2"]) for t in rep["tensors"] if not t["passed"]]
    assert rep["passed"], bad
    assert rep["train_auto"]["trainable"] == rep["trainable"]
    assert {t["name"] for t in rep["tensors"] if t["kind"] == "param_grad"} == set(rep["trainable"])
