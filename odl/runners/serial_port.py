"""Run on a board (or anything that speaks the odl protocol) through a serial port, with pyserial.

The port is a device path (/dev/ttyUSB0, COM3) or any pyserial URL (socket://host:port, rfc2217://...). The board
must already run the firmware of the training step (built by odl validate/compile for its target and flashed,
e.g. with `--flash "openocd ... {elf}"`). All data crosses the protocol: parameters and inputs by WRITE, results
by READ (only the buffers the host compares), so this is slower than the emulator's bulk path but needs nothing
from the board beyond its UART."""
from __future__ import annotations

import serial

from ..errors import ToolError
from ..protocol import Link, ProtocolError


class SerialRunner:
    name = "serial"
    bulk = "uart"

    def __init__(self, port: str, baud: int = 115200, timeout: float = 120.0):
        self.url, self.baud, self.timeout = port, baud, timeout
        self.port = None
        self.link: Link | None = None
        self.hello = None

    def __enter__(self) -> "SerialRunner":
        try:
            self.port = serial.serial_for_url(self.url, baudrate=self.baud, timeout=0.5)
        except (serial.SerialException, OSError, ValueError) as e:
            raise ToolError(f"cannot open serial port {self.url}: {e}") from None
        self.link = Link(self.port, timeout=self.timeout)
        try:
            self.port.reset_input_buffer()
        except Exception:
            pass
        try:
            self.hello = self.link.info(timeout=10.0)
        except ProtocolError as e:
            self.close()
            raise ToolError(f"no odl firmware answering on {self.url}: {e}") from None
        return self

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
        self.close()   # a board keeps running its firmware; nothing to stop
