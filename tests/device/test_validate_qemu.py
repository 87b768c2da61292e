"""The spine end to end: a user model file, lowered, built, run on QEMU (1 and 8 harts, fp32 and fp16),
compared with PyTorch tensor by tensor through `odl validate`."""
import json
import subprocess
import sys

import pytest

from helpers import MODELS, needs_qemu

SPINE = MODELS / "spine_model.py"
KINDS = {"output", "activation", "param_grad", "input_grad", "param_updated"}


@needs_qemu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("cores", [1, 8])
def test_spine_validates(tmp_path, precision, cores):
    out = tmp_path / "report.json"
    p = subprocess.run([sys.executable, "-m", "odl.cli.main", "validate", f"{SPINE}:SpineNet", "--precision", precision,
                        "--cores", str(cores), "--input-shape", "3x3x7x8", "--seed", "3", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(out.read_text())
    assert rep["passed"] is True
    assert (rep["model"], rep["target"], rep["runner"], rep["precision"], rep["cores"]) == \
        ("SpineNet", "rv32-cluster", "qemu", precision, cores)
    names = {(t["name"], t["kind"]) for t in rep["tensors"]}
    for w in ("c1.weight", "c1.bias", "c2.weight", "c2.bias", "fc.weight", "fc.bias"):
        assert (w, "param_grad") in names and (w, "param_updated") in names
    assert {t["kind"] for t in rep["tensors"]} == KINDS
    # d(c1 out) and d(c2 out); the ReLU input gradients are computed in place over their output gradients
    assert sum(t["kind"] == "input_grad" for t in rep["tensors"]) >= 2
    tol = 1e-4 if precision == "fp32" else 3e-2
    for t in rep["tensors"]:
        assert t["passed"] and t["rel_l2"] <= tol, t
        if precision == "fp16":
            assert t["cosine"] >= 0.999 and "torch_rel_l2" in t
    assert abs(rep["loss"]["device"] - rep["loss"]["reference"]) <= tol * abs(rep["loss"]["reference"])
    assert rep["macs"]["total"] == rep["macs"]["forward"] + rep["macs"]["backward"] > 0
    assert rep["memory"]["arena_bytes"] <= rep["memory"]["naive_bytes"]
    assert rep["wall_s"] > 0


@needs_qemu
def test_tolerance_failure_exits_1(tmp_path, monkeypatch):
    """A wrong device result must fail validation (exit 1), not pass silently: tighten the tolerance to zero."""
    from odl.verify import compare
    from odl.verify import validate
    monkeypatch.setitem(compare.TOLERANCE, "fp16", {"rel_l2": 0.0, "cosine": 1.0})
    monkeypatch.setattr(compare, "TORCH_FACTOR", 0.0)
    rep = validate.validate(f"{SPINE}:SpineNet", precision="fp16", cores=2, input_shape="1x3x7x8", log=lambda s: None)
    assert rep["passed"] is False
    assert any(not t["passed"] for t in rep["tensors"])
