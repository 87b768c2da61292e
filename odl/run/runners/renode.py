"""Run a firmware ELF on Renode (when `renode` is on PATH), talking to it over the UART with the odl protocol.

Renode is not packaged in Debian, PyPI or npm, so CI cannot install it: the platform description and script are
generated and unit-tested everywhere, and the end-to-end test runs where `renode` exists. The same ELF as on QEMU
runs unchanged (same memory map: RAM 0x80000000, NS16550 at 0x10000000, CLINT at 0x02000000). Parameters are
preloaded with `sysbus LoadBinary`; results come back over the UART (READ) — Renode has no semihosting; each
hart's `minstret` is exact there, so STEP's counts are real per-hart instruction counts.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import jinja2
import serial

from odl.common import cleanup
from odl.common.errors import ToolError
from odl.run.runners.serial_port import UartSession


def platform_repl(target, cores: int) -> str:
    tpl = target.dir / "renode.repl.j2"
    if not tpl.exists():
        raise ToolError(f"target {target.name} has no Renode platform (renode.repl.j2)")
    from odl.tile.memory import hierarchy_of
    h = hierarchy_of(target)
    ram = target.ram_base
    return jinja2.Template(tpl.read_text(), undefined=jinja2.StrictUndefined).render(
        harts=cores, ram=f"{ram:#x}", ram_size=f"{h.l1_addr - ram:#x}", l1=f"{h.l1_addr:#x}",
        l1_size=f"{h.l1_bytes:#x}", l2=f"{h.l2_addr:#x}", l2_size=f"{ram + 0x08000000 - h.l2_addr:#x}")


def script_resc(repl: Path, elf: Path, port: int, cores: int, vlen: int = 128,
                preload: list[tuple[int, Path]] = ()) -> str:
    lines = ['mach create "odl"', f"machine LoadPlatformDescription @{repl}"]
    lines += [f"cpu{h} VectorRegisterLength {vlen}" for h in range(cores)]
    lines += [f'emulation CreateServerSocketTerminal {port} "uart" false', "connector Connect sysbus.uart0 uart",
              f"sysbus LoadELF @{elf}"]
    lines += [f"sysbus LoadBinary @{f} {addr:#x}" for addr, f in preload]
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    """A port free now. Renode's UART is a server socket terminal (it cannot connect out as QEMU's does, see
    odl.run.runners.uart_socket), so Renode binds the port itself and another process can take it in between: the
    window the QEMU runner closed. Renode runs one device at a time in every odl command."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RenodeRunner(UartSession):
    name = "renode"

    def __init__(self, target, elf: Path, cores: int, workdir: Path, preload: list[tuple[int, bytes]] = (),
                 timeout: float = 600.0, boot_timeout: float = 60.0):
        # the preload goes in through Renode's loader (the script), not over the UART
        super().__init__((), timeout)
        self.target, self.elf, self.cores, self.workdir = target, Path(elf).resolve(), cores, Path(workdir)
        self.blobs, self.boot_timeout = list(preload), boot_timeout
        from odl.run.runners.qemu import dma_controller
        if dma_controller(self.elf):
            raise RunnerError("--dma-controller: the Renode platform has no controller hart; run it on QEMU")
        self.proc = None

    def files(self, port: int) -> Path:
        """Write the platform and the script into workdir; returns the script."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        repl = self.workdir / "odl.repl"
        repl.write_text(platform_repl(self.target, self.cores))
        blobs = []
        for i, (off, data) in enumerate(self.blobs):
            f = self.workdir / f"preload_{i}.bin"
            f.write_bytes(bytes(data))
            blobs.append((self.target.arena_addr + off, f.resolve()))
        resc = self.workdir / "odl.resc"
        resc.write_text(script_resc(repl.resolve(), self.elf, port, self.cores, preload=blobs))
        return resc

    def __enter__(self) -> "RenodeRunner":
        exe = shutil.which("renode")
        if exe is None:
            raise ToolError("renode is not on PATH (it is not packaged in Debian/PyPI/npm; install it from its "
                            "project's releases) — use the default QEMU runner instead")
        port = _free_port()
        resc = self.files(port)
        self.proc = cleanup.popen([exe, "--disable-xwt", "--plain", "-P", "-1", str(resc), "-e", "start"],
                                     cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=open(self.workdir / "renode.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.boot_timeout
        sock = None
        while sock is None and time.monotonic() < deadline and self.proc.poll() is None:
            try:
                sock = serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=0.5)
            except (serial.SerialException, OSError):
                time.sleep(0.2)
        if sock is None:
            self.close()
            raise ToolError(f"Renode did not open its UART socket (see {self.workdir / 'renode.log'})")
        self._attach(sock, "Renode's UART", self.boot_timeout)
        return self

    def close(self) -> None:
        """Close the UART and stop Renode (it has no exit device on this memory map)."""
        super().close()
        cleanup.kill(self.proc)
