"""Bad flags and paths are refused before anything is traced or built: exit 2, one line, no traceback, nothing
written. And every command's --help lists defaults, exit codes and an example."""
import subprocess
import sys
import time

import pytest

from helpers import MODELS

SPINE = f"{MODELS / 'spine_model.py'}:SpineNet"


def run(*args):
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "odl.cli.main", *args], capture_output=True, text=True, timeout=120)
    return p, time.monotonic() - t0


@pytest.mark.parametrize("flags,msg", [
    (["--lr", "-1"], "--lr -1.0: the learning rate must be > 0"),
    (["--lr", "0"], "--lr 0.0: the learning rate must be > 0"),
    (["--lr", "nan"], "--lr nan: must be a finite number"),
    (["--lr", "inf"], "--lr inf: must be a finite number"),
    (["--momentum", "-0.5"], "--momentum -0.5: must be in [0, 1)"),
    (["--momentum", "1"], "--momentum 1.0: must be in [0, 1)"),
    (["--weight-decay", "nan"], "--weight-decay nan: must be a finite number"),
    (["--weight-decay=-1e-4"], "--weight-decay -0.0001: must be >= 0"),
    (["--cores", "9"], "--cores 9: target rv32-cluster has 8 harts; valid range 1..8"),
    (["--cores", "0"], "valid range 1..8"),
    (["--steps", "0"], "--steps 0: must be > 0"),
    (["--json", "/no/such/dir/x.json"], "--json /no/such/dir/x.json: directory /no/such/dir does not exist"),
    (["--keep", "/no/such/dir/k"], "--keep /no/such/dir/k: directory /no/such/dir does not exist"),
    (["--port", "/dev/ttyNOPE0"], "--port /dev/ttyNOPE0: cannot open it"),
    (["--port", "socket://127.0.0.1:1"], "--port socket://127.0.0.1:1: cannot open it"),
    (["--step-timeout", "-3"], "--step-timeout -3.0: must be > 0"),
])
def test_validate_flags_refused_before_build(flags, msg, tmp_path):
    p, dt = run("validate", SPINE, "--input-shape", "1x3x7x8", *flags)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert dt < 30   # no build, no emulator


def test_output_paths_of_other_commands(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        p, _ = run("profile", SPINE, "--input-shape", "1x3x7x8", "--png", str(ro / "x.png"))
        if p.returncode == 2 and "matplotlib" in p.stderr:
            pytest.skip("matplotlib not installed")
        import os
        if os.geteuid() == 0:   # root writes anywhere: only the missing-directory case is checkable
            pytest.skip("running as root")
        assert p.returncode == 2 and f"--png {ro / 'x.png'}: not writable" in p.stderr
    finally:
        ro.chmod(0o700)
    p, _ = run("compile", SPINE, "--input-shape", "1x3x7x8", "-o", str(tmp_path / "no" / "proj"))
    assert p.returncode == 2 and "-o/--output" in p.stderr and "does not exist" in p.stderr
    p, _ = run("bench", "--json", str(tmp_path))
    assert p.returncode == 2 and "is a directory" in p.stderr
    p, _ = run("profile", SPINE, "--input-shape", "1x3x7x8", "--lr", "nan")
    assert p.returncode == 2 and "--lr nan" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_check_train_flags_reusable():
    """The helper works on any namespace, e.g. a later command's Adam flags."""
    from argparse import Namespace
    from odl.cli.checks import check_train_flags
    from odl.common.errors import OdlError
    check_train_flags(Namespace(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8))
    for bad in (dict(beta1=1.0), dict(beta2=-0.1), dict(eps=0.0), dict(betas="0.9"), dict(betas="0.9,1.5"),
                dict(eps=float("nan"))):
        with pytest.raises(OdlError):
            check_train_flags(Namespace(lr=1e-3, **bad))


@pytest.mark.parametrize("cmd", ["validate", "compile", "profile", "tune", "bench", "models"])
def test_help_lists_defaults_exit_codes_example(cmd):
    p, _ = run(cmd, "--help")
    assert p.returncode == 0
    assert "exit codes: 0" in p.stdout and "examples:" in p.stdout and f"odl {cmd}" in p.stdout
    if cmd in ("validate", "profile"):
        assert "(default: fp32)" in p.stdout and "{fp32,fp16}" in p.stdout


def test_phases_printed_as_they_happen(tmp_path):
    import os
    env = dict(os.environ, ODL_PROGRESS="1")
    p = subprocess.run([sys.executable, "-m", "odl.cli.main", "compile", "tinycnn", "-o", str(tmp_path / "proj")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    names = [line.split("] ", 1)[1].split(":")[0] for line in p.stderr.splitlines() if line.startswith("odl compile [")]
    assert names == ["trace", "lower/plan", "write"], p.stderr
    env["ODL_PROGRESS"] = "0"
    p = subprocess.run([sys.executable, "-m", "odl.cli.main", "compile", "tinycnn", "-o", str(tmp_path / "proj2")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0 and p.stderr == ""
