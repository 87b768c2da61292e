"""Run a firmware ELF on QEMU (rv32 `virt`), talk to it with the odl protocol over the UART (a TCP connection that
QEMU opens to a socket odl listens on).

Bulk data goes around the slow emulated UART (~5 KB/s): inputs are preloaded into the arena with QEMU's
generic loader (`-device loader,file=F,addr=A,force-raw=on`), results come back through semihosting
(DUMP writes a file into the working directory)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

from odl.common import cleanup
from odl.common.errors import ToolError
from odl.run.protocol import Link, ProtocolError
from odl.target.description import Target
from odl.run.runners.uart_socket import UartSocket, listen_local


class RunnerError(ToolError):
    pass


def dma_controller(elf: Path) -> int:
    """1 when the firmware programs the DMA from a controller hart of its own (built with ODL_DMA_CTRL: one hart
    more than its cores), else 0."""
    from odl.target.elf import symbols
    return int("odl_dma_ctrl_hart" in symbols(elf))


class QemuRunner:
    """with QemuRunner(target, elf, cores, workdir, preload=[(offset, bytes)]) as r:
           r.link.step(1); data = r.read_arena(off, n); r.exit()"""

    name = "qemu"

    def __init__(self, target: Target, elf: Path, cores: int, workdir: Path,
                 preload: list[tuple[int, bytes]] = (), timeout: float = 60.0, boot_timeout: float = 20.0,
                 extra_args: list[str] = (), bulk: str = "fast"):
        if target.qemu is None:
            raise RunnerError(f"target {target.name} has no QEMU configuration")
        if not 1 <= cores <= target.harts:
            raise RunnerError(f"cores must be 1..{target.harts}, not {cores}")
        self.target = target
        self.elf = Path(elf).resolve()
        self.cores = cores
        self.workdir = Path(workdir).resolve()
        self.preload = list(preload)
        self.timeout = timeout
        self.boot_timeout = boot_timeout
        self.extra_args = list(extra_args)
        if bulk not in ("fast", "uart"):
            raise RunnerError(f"bulk must be 'fast' or 'uart', not {bulk!r}")
        # fast: preload by QEMU's loader, read back by semihosting DUMP; uart: everything over the protocol's
        # WRITE/READ, exactly as with a board (odl.run.runners.serial_port)
        self.bulk = bulk
        self.proc: subprocess.Popen | None = None
        self.port = None
        self.link: Link | None = None
        self.hello = None
        self.exit_status: int | None = None
        self._stderr_path = self.workdir / "qemu.stderr"
        self._stdout_path = self.workdir / "qemu.stdout"

    # -- command line ---------------------------------------------------------------------------
    def command(self, tcp_port: int) -> list[str]:
        q = self.target.qemu
        exe = shutil.which(q.binary)
        if exe is None:
            raise RunnerError(f"{q.binary} not found on PATH (QEMU >= 8 with zvfh is needed; see scripts/setup.sh)")
        cmd = [exe, "-machine", q.machine, "-cpu", q.cpu, "-smp", str(self.cores + dma_controller(self.elf)), *q.extra,
               "-semihosting-config", "enable=on,target=native",
               "-serial", f"tcp:127.0.0.1:{tcp_port},nodelay=on",   # QEMU is the client: odl listens
               "-kernel", str(self.elf)]
        for i, (off, data) in enumerate(self.preload if self.bulk == "fast" else ()):
            f = self.workdir / f"preload_{i}.bin"
            f.write_bytes(bytes(data))
            cmd += ["-device", f"loader,file={f},addr={self.target.arena_addr + off:#x},force-raw=on"]
        return cmd + self.extra_args

    def stderr_tail(self, n: int = 2000) -> str:
        out = ""
        for p in (self._stderr_path, self._stdout_path):
            try:
                t = p.read_text(errors="replace")
            except OSError:
                continue
            if t.strip():
                out += f"\n--- qemu {p.suffix[1:]} (tail) ---\n" + t[-n:]
        return out

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "QemuRunner":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with listen_local() as srv:   # odl holds the port; QEMU connects to it (see odl.run.runners.uart_socket)
            cmd = self.command(srv.getsockname()[1])
            self.cmdline = cmd
            with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
                self.proc = cleanup.popen(cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            srv.settimeout(0.05)
            deadline = time.monotonic() + self.boot_timeout
            while self.port is None:
                try:
                    conn, _ = srv.accept()
                except socket.timeout:
                    status = self.proc.poll()
                    if status is None and time.monotonic() < deadline:
                        continue
                    self._kill()
                    why = (f"QEMU exited with status {status}" if status is not None
                           else f"no connection within {self.boot_timeout:g} s")
                    raise RunnerError(f"QEMU did not connect to its UART socket: {why}{self.stderr_tail()}"
                                      f"\ncommand: {' '.join(cmd)}") from None
                self.port = UartSocket(conn, timeout=0.5)
        self.link = Link(self.port, timeout=self.timeout)
        try:
            self.hello = self.link.hello(timeout=self.boot_timeout)
        except ProtocolError as e:
            self._kill()
            raise RunnerError(f"no HELLO from the firmware: {e}{self.stderr_tail()}") from e
        if self.bulk == "uart":
            for off, data in self.preload:
                self.link.write(off, data)
        return self

    def load(self, offset: int, data: bytes) -> None:
        self.link.write(offset, data)

    def __enter__(self) -> "QemuRunner":
        try:
            return self.start()
        except BaseException:
            self._kill()
            raise

    def __exit__(self, et, ev, tb) -> None:
        if et is not None:
            status = self.proc.poll() if self.proc is not None else None
            self._kill()
            if isinstance(ev, ToolError) and not getattr(ev, "_odl_qemu_tail", False):
                tail = self.stderr_tail()
                if status is not None:
                    tail = f"\n(QEMU had already exited with status {status})" + tail
                if tail:
                    ev.args = (f"{ev.args[0] if ev.args else ''}{tail}",) + tuple(ev.args[1:])
                ev._odl_qemu_tail = True
            return None
        if self.exit_status is None:   # the caller did not exit explicitly
            self.exit(0)

    def _kill(self) -> None:
        if self.port is not None:
            try:
                self.port.close()
            except Exception:
                pass
            self.port = None
        cleanup.kill(self.proc)

    def exit(self, code: int = 0, wait: float = 10.0) -> int:
        """Send EXIT(code), wait for QEMU to end; its exit status must be `code` (0 = pass). The device exits right
        after its ACK, so a lost ACK shows up as a lost connection: QEMU's exit status then decides."""
        sent_err = None
        try:
            self.link.exit(code)
        except ProtocolError as e:
            sent_err = e
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired as e:
            self._kill()
            raise RunnerError(f"QEMU did not exit cleanly: {sent_err or e}{self.stderr_tail()}") from e
        finally:
            if self.port is not None:
                self.port.close()
                self.port = None
        self.exit_status = self.proc.returncode
        cleanup.forget(self.proc)
        if self.exit_status != code:
            raise RunnerError(f"QEMU exit status {self.exit_status}, expected {code}"
                              f"{f' ({sent_err})' if sent_err else ''}{self.stderr_tail()}")
        return self.exit_status

    # -- bulk data --------------------------------------------------------------------------------
    def read_arena(self, offset: int, n: int) -> bytes:
        """Read arena bytes through semihosting (DUMP to a file in workdir), much faster than the UART; or
        over the UART (READ) with bulk='uart'."""
        if self.bulk == "uart":
            return self.link.read(offset, n)
        name = f"dump_{uuid.uuid4().hex[:12]}.bin"
        self.link.dump(offset, n, name)
        f = self.workdir / name
        try:
            data = f.read_bytes()
        except OSError as e:
            raise RunnerError(f"DUMP reported success but {f} is missing: {e}{self.stderr_tail()}") from e
        f.unlink()
        if len(data) != n:
            raise RunnerError(f"DUMP wrote {len(data)} bytes, expected {n}")
        return data
