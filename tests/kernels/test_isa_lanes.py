"""The cost model's FP16 SIMD is 2 lanes: no firmware instruction may set a vector length above 2 (clang can
otherwise turn struct copies or neighbouring element copies into 128-bit vectors behind our back)."""

import pytest

from odl.codegen.render import render
from odl.target.isa_check import vector_length_violations
from odl.lower.lowering import lower
from odl.plan.planner import plan
from odl.target.description import load_target
from odl.target.toolchain import build_firmware
from odl.verify.validate import prepare


@pytest.mark.parametrize("model,precision", [("resnet8", "fp16"), ("resnet8", "fp32"), ("dscnn", "fp16")])
def test_firmware_uses_at_most_two_lanes(tmp_path, model, precision):
    t = load_target("rv32-cluster")
    prep = prepare(model, None, 0, precision)
    prog = lower(prep.graph, precision, observe=True, profile=True)
    plan(prog)
    srcs = render(prog, model, 8, tmp_path / "gen")
    elf = build_firmware(t, precision, 8, srcs, [tmp_path / "gen"], tmp_path / "build", defines=["ODL_PROFILE"],
                         scalar_sources=srcs)
    assert vector_length_violations(elf) == []


def test_checker_sees_wide_vectors(tmp_path):
    """Code built with vectors allowed (no scalar_cflags) is caught: the check is not vacuous. (The generated model's
    argument structs, which clang used to copy with wide vectors, are now mostly static constants: a struct copy
    stands in for them.)"""
    import subprocess
    from odl.target.toolchain import compile_flags, find_cc
    t = load_target("rv32-cluster")
    src = tmp_path / "copy.c"
    src.write_text("typedef struct { int v[16]; } args_t;\n"
                   "void copy_args(args_t *d, const args_t *s) { *d = *s; }\n")
    obj = tmp_path / "copy.o"
    flags = compile_flags(t, "fp16", 8, [])   # the target's flags, without scalar_cflags
    subprocess.run(find_cc() + flags + ["-c", str(src), "-o", str(obj)], check=True, capture_output=True)
    assert vector_length_violations(obj), "expected clang to copy the struct with wide vectors"
