"""The link survives damage: a proxy between pyserial and an emulated board's UART flips, drops, duplicates and
delays bytes (tests/device/faultproxy.py) in both directions. With 1 damaged byte in 1,000 each way, `odl validate --port`
passes, and a 3-step run ends with bit-identical weights to a run over a clean link (a STEP never applied twice, a
WRITE never half-applied)."""
import json
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import MODELS, free_port, kill_pidfile, needs_qemu
from faultproxy import FaultProxy
from odl.common import cleanup
from odl.target.description import load_target

SPINE = f"{MODELS / 'spine_model.py'}:SpineNet"
RATE = 1e-3


def board_cmd(port: int, cores: int, elf="{elf}", daemon_pidfile=None) -> list[str]:
    """QEMU standing in for a flashed board: only its UART (a TCP server that does not wait for the host)."""
    q = load_target("rv32-cluster").qemu
    extra = [x for x in q.extra if x != "-nographic"]
    cmd = [shutil.which(q.binary), "-machine", q.machine, "-cpu", q.cpu, "-smp", str(cores), *extra,
           "-serial", f"tcp:127.0.0.1:{port},server=on,wait=off", "-display", "none", "-kernel", str(elf)]
    if daemon_pidfile:
        cmd += ["-daemonize", "-pidfile", str(daemon_pidfile)]
    return cmd


def wait_listening(port: int, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"board UART on {port} never listened")


@needs_qemu
@pytest.mark.slow
def test_validate_through_a_damaging_link(tmp_path):
    port = free_port()
    pidfile = tmp_path / "board.pid"
    flash = " ".join(board_cmd(port, 3, daemon_pidfile=pidfile)) + " && sleep 0.3"
    out = tmp_path / "r.json"
    try:
        with FaultProxy(port, rate=RATE, seed=11) as proxy:
            p = subprocess.run([sys.executable, "-m", "odl.cli.main", "validate", SPINE, "--input-shape", "2x3x7x8",
                                "--precision", "fp16", "--cores", "3", "--steps", "2", "--port", proxy.url,
                                "--flash", flash, "--json", str(out)], capture_output=True, text=True, timeout=900)
            damage = (proxy.to_device, proxy.to_host)
        assert p.returncode == 0, p.stdout + p.stderr
        rep = json.loads(out.read_text())
        assert rep["passed"] and rep["runner"] == "serial"
        link = rep["link"]
        print(f"damage to device {damage[0]}, to host {damage[1]}; link {link}")
        assert damage[0].damaged > 0 and damage[1].damaged > 0        # the proxy really damaged both directions
        assert link["retransmissions"] > 0
    finally:
        kill_pidfile(pidfile)


def run_on_board(elf, cores, prog, prep, rate, seed):
    """run_device on a fresh board, through a proxy damaging `rate` of the bytes: (step results, final arena, stats)."""
    from odl.run.runners.serial_port import SerialRunner
    from odl.pipeline import preload_blob
    from odl.verify.validate import run_device
    port = free_port()
    board = cleanup.popen(board_cmd(port, cores, elf), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        with FaultProxy(port, rate=rate, seed=seed) as proxy:
            with SerialRunner(proxy.url, preload=[(0, preload_blob(prog, prep))], timeout=120) as r:
                results, _, last = run_device(r, prog, prep, cores)
            return results, last, r.link.stats, (proxy.to_device, proxy.to_host)
    finally:
        cleanup.kill(board)


@needs_qemu
def test_multi_step_weights_identical_to_clean_link(tmp_path):
    from odl.lower.lowering import TrainConfig, lower
    from odl.plan.planner import plan
    from odl.target.description import load_target
    from odl.verify.validate import build, prepare
    target = load_target("rv32-cluster")
    cfg = TrainConfig(lr=0.05, momentum=0.9)
    prep = prepare(SPINE, "2x3x7x8", 3, "fp16", steps=3)
    prog = lower(prep.graph, "fp16", cfg, observe=True, cores=2)
    plan(prog)
    elf = build(prog, prep.name, target, 2, tmp_path)
    clean = run_on_board(elf, 2, prog, prep, 0.0, 0)
    dirty = run_on_board(elf, 2, prog, prep, RATE, 5)
    print(f"clean {clean[2]}\ndamaged {dirty[2]}; damage to device {dirty[3][0]}, to host {dirty[3][1]}")
    assert dirty[3][0].damaged + dirty[3][1].damaged > 0 and dirty[2].retransmissions > 0
    # a clean link may still resend when the host is starved of CPU (a reply later than the timeout), never
    # because of damage: no damaged frame on it
    assert clean[2].damaged_frames == 0 and clean[2].retransmissions <= dirty[2].retransmissions
    assert [r.loss for r in clean[0]] == [r.loss for r in dirty[0]]      # same losses, every step once
    for name, buf in prog.params.items():
        a = clean[1][buf.offset:buf.offset + buf.nbytes(prog.elem_bytes)]
        b = dirty[1][buf.offset:buf.offset + buf.nbytes(prog.elem_bytes)]
        assert a == b, f"{name} differs after 3 steps over a damaged link"
    # and the weights did move (the comparison is not of untouched initial values)
    p0 = np.frombuffer(prog_initial(prog, prep), np.uint8)
    assert any(p0[b.offset:b.offset + b.nbytes(prog.elem_bytes)].tobytes()
               != clean[1][b.offset:b.offset + b.nbytes(prog.elem_bytes)] for b in prog.params.values())


def prog_initial(prog, prep):
    from odl.pipeline import preload_blob
    blob = preload_blob(prog, prep)
    return blob + bytes(max(0, prog.arena_bytes - len(blob)))


@needs_qemu
def test_validate_over_a_tty(tmp_path):
    """The same code path on a /dev/tty*-style device: QEMU's UART behind a pseudo-terminal (a pty chardev, with
    a symlink at a known path), started by --flash as a board would be flashed."""
    import os
    q = load_target("rv32-cluster").qemu
    extra = [x for x in q.extra if x != "-nographic"]
    tty, pidfile = tmp_path / "ttyBOARD0", tmp_path / "board.pid"
    flash = " ".join([shutil.which(q.binary), "-machine", q.machine, "-cpu", q.cpu, "-smp", "2", *extra,
                      "-chardev", f"pty,id=uart0,path={tty}", "-serial", "chardev:uart0", "-display", "none",
                      "-kernel", "{elf}", "-daemonize", "-pidfile", str(pidfile)]) + " && sleep 0.3"
    out = tmp_path / "r.json"
    try:
        p = subprocess.run([sys.executable, "-m", "odl.cli.main", "validate", SPINE, "--input-shape", "1x3x7x8",
                            "--precision", "fp16", "--cores", "2", "--port", str(tty), "--flash", flash,
                            "--json", str(out)], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        rep = json.loads(out.read_text())
        assert rep["passed"] and rep["runner"] == "serial"
        # a clean link: nothing damaged (a request may be sent again if the freshly booted board answers late)
        assert rep["link"]["damaged_frames"] == 0 and rep["link"]["device_rejected"] == 0
        assert os.path.realpath(tty).startswith("/dev/pts/")
    finally:
        kill_pidfile(pidfile)
