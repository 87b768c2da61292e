"""odl.common.precision: one answer per precision for every stage."""
import numpy as np
import pytest
import torch

from odl.common.errors import OdlError
from odl.common.precision import PRECISIONS, STEP_PRECISIONS, align, dtype_bytes, dtype_np, precision_of


def test_what_each_precision_means():
    fp32, fp16, mixed = (precision_of(n) for n in ("fp32", "fp16", "mixed"))
    assert (fp32.elem_bytes, fp32.lanes, fp32.np_dtype, fp32.torch_dtype, fp32.c_defines) == (4, 1, np.float32, torch.float32, [])
    assert (fp16.elem_bytes, fp16.lanes, fp16.np_dtype, fp16.torch_dtype, fp16.c_defines) == (2, 2, np.float16, torch.float16, ["-DODL_FP16=1"])
    # mixed computes as fp16 does and keeps FP32 master weights
    assert mixed.device == "fp16" and mixed.elem_bytes == 2 and mixed.master_fp32 and not fp16.master_fp32
    assert set(PRECISIONS) == {"fp32", "fp16", "mixed"} and STEP_PRECISIONS == ("fp32", "fp16")


def test_element_sizes_and_alignment():
    assert [dtype_bytes(d, "fp16") for d in ("odl", "f32", "i32", "u8")] == [2, 4, 4, 1]
    assert dtype_bytes("odl", "fp32") == 4 and dtype_np("odl", "mixed") == np.float16 and dtype_np("i32", "fp16") == np.int32
    assert [align(v) for v in (0, 1, 16, 17)] == [0, 16, 16, 32]


def test_a_wrong_name_is_refused_with_the_choices():
    with pytest.raises(OdlError, match="precision must be one of fp32, fp16, not 'mixed'"):
        precision_of("mixed", STEP_PRECISIONS)
    with pytest.raises(OdlError, match="'bf16'"):
        precision_of("bf16")


def test_progress_bars_only_on_a_terminal(monkeypatch, capsys):
    """Redirected, a bar draws nothing (no carriage-return frames in a log); ODL_PROGRESS=1 forces it on."""
    from odl.common.progress import bar
    monkeypatch.delenv("ODL_PROGRESS", raising=False)
    with bar(total=3, desc="t") as b:    # pytest's stderr is not a terminal
        for _ in range(3):
            b.update(1)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("ODL_PROGRESS", "1")
    with bar(total=3, desc="t") as b:
        b.update(3)
    assert "odl t" in capsys.readouterr().err
    with bar(total=3, desc="t", enabled=False) as b:   # --no-progress
        b.update(3)
    assert capsys.readouterr().err == ""
