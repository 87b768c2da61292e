"""Run on a board (or anything that speaks the odl protocol) through a serial port, with pyserial.

The port is a device path (/dev/ttyUSB0, COM3) or any pyserial URL (socket://host:port, rfc2217://...). The board
must already run the firmware of the training step (built by odl validate/compile for its target and flashed,
e.g. with `--flash "openocd ... {elf}"`). All data crosses the protocol: parameters and inputs by WRITE, results
by READ (only the buffers the host compares), so this is slower than the emulator's bulk path but needs nothing
from the board beyond its UART."""
from __future__ import annotations

import serial

from odl.common.errors import ToolError
from odl.run.protocol import Link, ProtocolError


class UartSession:
    """A device reached only through the protocol on a pyserial port: preload by WRITE, results by READ, and
    nothing to stop at the end but the connection (shared by the board and the Renode runners)."""
    bulk = "uart"

    def __init__(self, preload: list[tuple[int, bytes]] = (), timeout: float = 120.0):
        self.preload, self.timeout = list(preload), timeout
        self.port = None
        self.link: Link | None = None
        self.hello = None

    def _attach(self, port, what: str, info_timeout: float) -> None:
        """Talk to the firmware on `port`: ask for its HELLO (it may have booted long before), then preload."""
        self.port = port
        self.link = Link(port, timeout=self.timeout)
        try:
            self.hello = self.link.info(timeout=info_timeout)
        except ProtocolError as e:
            self.close()
            raise ToolError(f"no odl firmware answering on {what}: {e}") from None
        for off, data in self.preload:
            self.load(off, data)

    def __exit__(self, et, ev, tb) -> None:
        self.close()

    def close(self) -> None:
        if self.port is not None:
            try:
                self.port.close()
            finally:
                self.port = None

    def load(self, offset: int, data: bytes) -> None:
        self.link.write(offset, data)

    def read_arena(self, offset: int, n: int) -> bytes:
        return self.link.read(offset, n)

    def exit(self, code: int = 0) -> None:
        self.close()   # the device keeps running its firmware; there is nothing to stop


class SerialRunner(UartSession):
    name = "serial"

    def __init__(self, port: str, baud: int = 115200, preload: list[tuple[int, bytes]] = (), timeout: float = 120.0):
        super().__init__(preload, timeout)
        self.url, self.baud = port, baud

    def __enter__(self) -> "SerialRunner":
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baud, timeout=0.5)
        except (serial.SerialException, OSError, ValueError) as e:
            raise ToolError(f"cannot open serial port {self.url}: {e}") from None
        try:
            port.reset_input_buffer()
        except Exception:
            pass
        self._attach(port, self.url, 10.0)
        return self
