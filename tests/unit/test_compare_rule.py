"""The validation rule (docs/validation.md): fixed tolerance, or no further from FP64 than twice PyTorch's own error
at the run's precision; the noise floor; a non-finite PyTorch error never excuses anything."""
import numpy as np

from odl.verify.compare import at_floor, judge, passes


def test_fixed_tolerance_or_twice_torch():
    assert passes(5e-5, None, None, "fp32") == (True, "tolerance")
    assert passes(2e-4, None, 1.1e-4, "fp32") == (True, "torch")       # ill-conditioned: torch itself is 1.1e-4 off
    assert passes(2e-4, None, 0.9e-4, "fp32") == (False, "-")          # more than twice torch's own error
    assert passes(2e-4, None, float("inf"), "fp32") == (False, "-")    # torch overflowed: no excuse
    assert passes(2e-4, None, float("nan"), "fp32") == (False, "-")
    assert passes(1e-2, 0.9985, None, "fp16") == (False, "-")          # fp16 needs cosine >= 0.999 too
    assert passes(1e-2, 0.9995, None, "fp16") == (True, "tolerance")


def test_judge_rows_measure_against_fp64_and_report_torch_error():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1000)
    torch_own = ref * (1 + 3e-4 * rng.standard_normal(1000))
    close = ref * (1 + 4e-4 * rng.standard_normal(1000))     # 1e-4 tolerance missed, but within 2x torch's error
    far = ref * (1 + 2e-3 * rng.standard_normal(1000))
    rows = judge([("a", "param_grad", close, ref, torch_own), ("b", "param_grad", far, ref, torch_own),
                  ("c", "param_grad", ref, ref, None)], "fp32")
    by = {r["name"]: r for r in rows}
    assert by["a"]["passed"] and by["a"]["rule"] == "torch" and 2e-4 < by["a"]["torch_rel_l2"] < 4e-4
    assert not by["b"]["passed"]
    assert by["c"]["passed"] and by["c"]["rule"] == "tolerance" and "torch_rel_l2" not in by["c"]


def test_noise_floor():
    rng = np.random.default_rng(1)
    big = [rng.standard_normal(64) for _ in range(3)]
    tiny = 1e-9 * rng.standard_normal(64)
    items = [(f"w{i}", "param_grad", b, b, None) for i, b in enumerate(big)] + [("bias", "param_grad", 0 * tiny, tiny,
                                                                                 None)]
    assert at_floor(items) == {("bias", "param_grad")}
    row = judge(items, "fp32")[-1]
    assert row["floor"] and row["passed"]
