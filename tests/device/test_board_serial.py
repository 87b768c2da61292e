"""The board path: `odl validate --port URL --flash CMD`. A QEMU started by the flash command without any host
channel but its UART (no loader, no semihosting, booted before the host connects) stands in for a flashed board;
everything crosses the framed protocol through pyserial, as with /dev/ttyUSB0."""
import shutil
import subprocess
import sys

from helpers import MODELS, free_port, kill_pidfile, needs_qemu
from odl.target.description import load_target


@needs_qemu
def test_validate_on_a_serial_board(tmp_path):
    t = load_target("rv32-cluster")
    port = free_port()
    pidfile = tmp_path / "board.pid"
    q = t.qemu
    board = (f"{shutil.which(q.binary)} -machine {q.machine} -cpu {q.cpu} -smp 3 {' '.join(q.extra)} "
             f"-serial tcp:127.0.0.1:{port},server=on,wait=off -kernel {{elf}} -daemonize -pidfile {pidfile} "
             f"-display none && sleep 0.5")
    board = board.replace("-nographic ", "")
    out = tmp_path / "r.json"
    try:
        p = subprocess.run([sys.executable, "-m", "odl.cli.main", "validate", f"{MODELS / 'spine_model.py'}:SpineNet",
                            "--input-shape", "2x3x7x8", "--precision", "fp16", "--cores", "3",
                            "--port", f"socket://127.0.0.1:{port}", "--flash", board, "--json", str(out)],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        import json
        rep = json.loads(out.read_text())
        assert rep["runner"] == "serial" and rep["bulk"] == "uart" and rep["passed"]
    finally:
        kill_pidfile(pidfile)


def test_serial_port_that_does_not_exist():
    p = subprocess.run([sys.executable, "-m", "odl.cli.main", "validate", f"{MODELS / 'spine_model.py'}:SpineNet",
                        "--input-shape", "1x3x7x8", "--port", "/dev/odl-no-such-port"],
                       capture_output=True, text=True, timeout=300)
    # refused before anything is built: exit 2, one line
    assert p.returncode == 2 and "--port /dev/odl-no-such-port: cannot open it" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert "Traceback" not in p.stderr
