"""`odl compile`: a standalone C project that builds with make + the cross compiler alone and runs on QEMU."""
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, needs_qemu
from odl.cli.main import main
from odl.deploy.compile import parse_bytes

EXPECTED = ["Makefile", "README.md", "run-qemu.sh", "weights.bin", "layout.json", "src/model.c", "src/odl_model.h",
            "kernels/matmul.c", "kernels/include/odl_kernels.h", "kernels/include/odl_types.h",
            "target/startup.S", "target/team.c", "target/link.ld", "target/odl_profile.h", "target/platform.h",
            "common/byte_io.c", "common/main.c", "common/protocol.c", "common/protocol.h", "host.py"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile") / "tinycnn"
    assert main(["compile", "tinycnn", "--precision", "fp16", "--seed", "3", "-o", str(out)]) == 0
    return out


def test_files_and_layout(project):
    for f in EXPECTED:
        assert (project / f).is_file(), f
    assert os.access(project / "run-qemu.sh", os.X_OK)
    assert not [p for p in project.parent.iterdir() if p.name.startswith(".")]   # no temp dirs left behind
    lay = json.loads((project / "layout.json").read_text())
    assert lay["precision"] == "fp16" and lay["model"] == "tinycnn"
    weights = (project / "weights.bin").read_bytes()
    assert lay["weights_bytes"] == len(weights)
    pre = [b for b in lay["buffers"] if b["preloaded"]]
    assert {b["role"] for b in pre} >= {"param", "input", "label"}
    assert max(b["offset"] + b["bytes"] for b in pre) == len(weights)
    for b in lay["buffers"]:       # L2 buffers in the arena, L1 tiles (memory hierarchy) within the L1 peak
        assert b["offset"] + b["bytes"] <= (lay["l1_peak_bytes"] if b["space"] == "l1" else lay["arena_bytes"])
        assert {"name", "role", "dtype", "shape", "offset", "bytes"} <= set(b)
    mk = (project / "Makefile").read_text()
    assert "ODL_FP16=1" in mk and "target/link.ld" in mk and str(ROOT) not in mk   # self-contained


@needs_qemu
def test_make_and_run(project, tmp_path):
    """Build with make + zig cc only (no odl Python in the build), run one STEP with weights.bin preloaded and
    compare the loss with PyTorch's."""
    import torch
    from odl.lower.lowering import TrainConfig
    from odl.verify.reference import reference_steps
    from odl.run.runners.qemu import QemuRunner
    from odl.target.description import load_target
    from odl.verify.validate import prepare

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ODL_CC", "ODL_LDFLAGS", "CC")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")   # the python3 with ziglang
    p = subprocess.run(["make", "-j8", "-C", str(project)],                  # plain make, as the README says
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    elf = project / "firmware.elf"
    assert elf.is_file()

    lay = json.loads((project / "layout.json").read_text())
    weights = (project / "weights.bin").read_bytes()
    with QemuRunner(load_target("rv32-cluster"), elf, 8, tmp_path / "run", preload=[(0, weights)]) as r:
        assert r.hello.precision_bits == 16 and r.hello.arena_bytes == lay["arena_bytes"]
        res = r.link.step(1)
        loss_buf = next(b for b in lay["buffers"] if b["name"] == lay["loss"])
        assert r.link.read(loss_buf["offset"], 4) == __import__("struct").pack("<f", res.loss)
        r.exit(0)

    prep = prepare("tinycnn", None, 3, "fp16")
    cfg = TrainConfig(seed=3)
    trainable = lay["trainable"]
    ref = reference_steps(prep.model, prep.batches, cfg, trainable)[0].loss
    assert abs(res.loss - ref) <= 3e-2 * abs(ref), (res.loss, ref)
    assert torch.isfinite(torch.tensor(res.loss))

    # the shipped host driver (pyserial only) starts QEMU itself, trains 3 steps, reads the loss back
    p = subprocess.run([sys.executable, str(project / "host.py"), "--qemu", "--steps", "3",
                        "--params-out", str(tmp_path / "params.bin")], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    losses = [float(line.split()[3]) for line in p.stdout.splitlines() if line.startswith("step ")]
    assert len(losses) == 3 and losses[0] == pytest.approx(res.loss, abs=1e-6)
    back = float(next(line for line in p.stdout.splitlines() if line.startswith("loss read back")).split()[-1])
    assert back == pytest.approx(losses[-1], abs=1e-6)
    nparam = sum(b["bytes"] for b in lay["buffers"] if b["role"] == "param")
    assert (tmp_path / "params.bin").stat().st_size == nparam


def test_over_budget(tmp_path, capsys):
    out = tmp_path / "small"
    assert main(["compile", "tinycnn", "--precision", "fp16", "--budget", "4K", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "budget of 4096 bytes" in err and "largest live buffers" in err and "fc.weight" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_nonempty_dir_refused(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["compile", "tinycnn", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not empty" in err and len(err.splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["compile", "tinycnn", "--force", "-o", str(out)]) == 0
    assert (out / "Makefile").is_file() and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_parse_bytes():
    assert parse_bytes("4096") == 4096
    assert parse_bytes("512K") == 512 * 1024
    assert parse_bytes("2M") == 2 << 20
    assert parse_bytes("1.5MiB") == 1572864
    assert parse_bytes("64kb") == 65536
    with pytest.raises(Exception):
        parse_bytes("lots")


def test_frozen_weights_in_rom_layout(tmp_path, capsys):
    """--frozen rom: the layout places the frozen weights past the L2 working area the budget counts, inside the
    static arena the device reports and inside weights.bin; the library (odl.h), which keeps every parameter in L2,
    is left out with a line saying why."""
    out = tmp_path / "p"
    assert main(["compile", "tinycnn", "--precision", "fp16", "--train", "last:1", "--frozen", "rom",
                 "-o", str(out)]) == 0
    assert "odl.h: not generated: --frozen rom" in capsys.readouterr().out
    lay = json.loads((out / "layout.json").read_text())
    assert lay["rom_bytes"] > 0 and lay["rom_offset"] >= lay["l2_bytes"]
    assert lay["arena_bytes"] == lay["rom_offset"] + lay["rom_bytes"]
    assert (out / "weights.bin").stat().st_size == lay["weights_bytes"] <= lay["arena_bytes"]
    rom = [b for b in lay["buffers"] if b["space"] == "rom"]
    assert rom and all(b["role"] == "param" and b["name"] not in lay["trainable"] and b["preloaded"] for b in rom)
    assert all(lay["rom_offset"] <= b["offset"] and b["offset"] + b["bytes"] <= lay["arena_bytes"] for b in rom)
    assert all(b["offset"] + b["bytes"] <= lay["l2_bytes"] for b in lay["buffers"] if b["space"] == "l2")
    assert "frozen weights" in (out / "README.md").read_text()
