"""Device faults end with a clear error within a bounded time, and no emulator process outlives odl: a kernel that
never returns, a trap, a reset in the middle of a run, the emulator killed, and odl itself interrupted (SIGINT,
SIGTERM) in the middle of a run (temporary directories removed too)."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import MODELS, ROOT, needs_qemu
from odl.run import protocol
from odl.run.runners import QemuRunner
from odl.target.description import load_target
from odl.target.toolchain import build_firmware

pytestmark = needs_qemu

ARENA = ('#include <stdint.h>\n'
         'unsigned char odl_arena[64] __attribute__((section(".odl_arena"), aligned(64)));\n'
         'const uint32_t odl_arena_bytes = sizeof odl_arena;\n')
MODELS_C = {
    "hang": ARENA + 'float odl_model_step(void) { for (;;) { __asm__ volatile("nop"); } return 0; }\n',
    "trap": ARENA + 'float odl_model_step(void) { __asm__ volatile(".word 0"); return 0; }\n',
    # a watchdog-style reset: jump back to the reset vector (hart 0 re-runs _start, main sends HELLO again)
    "reset": ARENA + 'extern void _start(void);\nfloat odl_model_step(void) { _start(); return 0; }\n',
}


@pytest.fixture(scope="module")
def fault_elfs(tmp_path_factory):
    d = tmp_path_factory.mktemp("faultfw")
    t = load_target("rv32-cluster")
    out = {}
    for name, src in MODELS_C.items():
        f = d / f"{name}.c"
        f.write_text(src)
        out[name] = build_firmware(t, "fp32", 1, [f], [], d / name, kernels=False)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def run_step(elf, tmp_path, timeout, during=None):
    r = QemuRunner(load_target("rv32-cluster"), elf, 1, tmp_path, timeout=timeout)
    t0 = time.monotonic()
    with pytest.raises(protocol.ProtocolError) as e:
        with r:
            if during:
                threading.Timer(1.0, during, args=(r,)).start()
            r.link.step(1)
    dt = time.monotonic() - t0
    assert r.proc is not None and not alive(r.proc.pid)   # the emulator is gone
    return str(e.value), dt


def test_hung_kernel_is_reported_after_the_step_timeout(fault_elfs, tmp_path):
    msg, dt = run_step(fault_elfs["hang"], tmp_path, timeout=3.0)
    print(f"hang detected after {dt:.2f} s (step timeout 3 s)")
    assert "STEP: the device accepted it but sent no reply within 3 s" in msg and "never returns" in msg
    assert 3.0 <= dt < 10.0


def test_trap_is_reported_at_once(fault_elfs, tmp_path):
    msg, dt = run_step(fault_elfs["trap"], tmp_path, timeout=60.0)
    print(f"trap reported after {dt:.2f} s")
    assert "mcause=00000002" in msg and dt < 10.0


def test_reset_in_the_middle_of_a_run(fault_elfs, tmp_path):
    msg, dt = run_step(fault_elfs["reset"], tmp_path, timeout=60.0)
    print(f"reset reported after {dt:.2f} s")
    assert "STEP: the device restarted (it sent HELLO) before answering" in msg and dt < 10.0


def test_emulator_killed(fault_elfs, tmp_path):
    msg, dt = run_step(fault_elfs["hang"], tmp_path, timeout=60.0, during=lambda r: os.kill(r.proc.pid, signal.SIGKILL))
    print(f"killed emulator reported after {dt:.2f} s")
    assert "connection lost while waiting for the reply to STEP" in msg and dt < 10.0


def qemu_pids_under(path: Path) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "qemu-system" in cmd and str(path) in cmd and alive(int(d.name)):
                out.append(int(d.name))
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_odl_interrupted_leaves_no_emulator_and_no_temp_dir(tmp_path, sig):
    env = dict(os.environ, TMPDIR=str(tmp_path), ODL_PROGRESS="1", PYTHONPATH=str(ROOT))
    out = tmp_path / "r.json"
    p = subprocess.Popen([sys.executable, "-m", "odl.cli.main", "validate", f"{MODELS / 'spine_model.py'}:SpineNet",
                          "--input-shape", "2x3x7x8", "--bulk", "uart", "--steps", "3", "--cores", "2",
                          "--json", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not qemu_pids_under(tmp_path) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        pids = qemu_pids_under(tmp_path)
        assert pids, "QEMU never started: " + (p.stderr.read() if p.poll() is not None else "")
        time.sleep(0.5)
        t0 = time.monotonic()
        p.send_signal(sig)
        rc = p.wait(timeout=30)
        dt = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
    err = p.stderr.read()
    print(f"{sig.name}: odl exited {rc} after {dt:.2f} s")
    assert rc == 130 and "odl: interrupted" in err and "Traceback" not in err, err
    phases = [line.split("] ", 1)[1].split(":")[0] for line in err.splitlines() if line.startswith("odl validate [")]
    assert phases[:4] == ["trace", "lower/plan", "build", "run"], err   # printed as they happened
    assert not any(alive(pid) for pid in pids)
    assert not qemu_pids_under(tmp_path)
    assert not list(tmp_path.glob("odl_*")), list(tmp_path.iterdir())   # temporary build directory removed
    assert not out.exists() and not list(tmp_path.glob(".r.json.*"))  # no (half-written) output
