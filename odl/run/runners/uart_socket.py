"""An emulator's UART as a serial port: the TCP connection that QEMU opens to a socket odl already listens on.

odl binds and listens first (port 0: the kernel hands out a port that no one else holds), then starts QEMU as the
client (`-serial tcp:127.0.0.1:PORT`); QEMU connects before its harts run, so no byte of the boot HELLO is lost.
The other way round (probe a free port, close it, let QEMU listen on it, connect) has a window in which two runners
started side by side (a fleet's parallel devices) can get the same port: one runner then talks to the other's
emulator and the other's HELLO never comes.

`UartSocket` has the part of pyserial's interface that `odl.run.protocol.Link` uses: `timeout`, `read`, `in_waiting`,
`write`, `flush`, `close`."""
from __future__ import annotations

import fcntl
import select
import socket
import struct
import termios
import time

import serial


def listen_local() -> socket.socket:
    """A socket listening on 127.0.0.1 at a port the kernel picks (`getsockname()[1]`)."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
    except OSError:
        srv.close()
        raise
    return srv


class UartSocket:
    """A connected TCP socket read and written like a pyserial port (reads wait at most `timeout` seconds)."""

    def __init__(self, sock: socket.socket, timeout: float = 0.5):
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock: socket.socket | None = sock
        self.timeout = timeout

    def _live(self) -> socket.socket:
        if self._sock is None:
            raise serial.SerialException("the UART socket is closed")
        return self._sock

    def read(self, size: int = 1) -> bytes:
        """Up to `size` bytes: returns when `size` came or `timeout` passed (pyserial's semantics)."""
        s = self._live()
        out = bytearray()
        deadline = time.monotonic() + self.timeout
        while len(out) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([s], [], [], left)[0]:
                break
            chunk = s.recv(size - len(out))
            if not chunk:
                raise serial.SerialException("the emulator closed its UART connection")
            out += chunk
        return bytes(out)

    @property
    def in_waiting(self) -> int:
        """Bytes received and not yet read (FIONREAD, as pyserial asks a POSIX port)."""
        return struct.unpack("I", fcntl.ioctl(self._live(), termios.FIONREAD, b"\0\0\0\0"))[0]

    def write(self, data: bytes) -> int:
        self._live().sendall(data)
        return len(data)

    def flush(self) -> None:
        pass   # sendall has handed every byte to the kernel

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
