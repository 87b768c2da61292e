"""odl host<->device framed protocol (host side). The same code runs over QEMU/Renode sockets and real
serial ports: `Link` takes any pyserial-like object with read(n) / write(b) and a read timeout.

Frame: b"OD" | u8 type | u32 LE payload length | payload | u32 LE CRC32 (zlib.crc32 of type+length+payload).
"""
from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass

from .errors import ToolError

MAGIC = b"OD"
VERSION = 1

HELLO = 0x01
WRITE = 0x10
READ = 0x11
STEP = 0x12
DUMP = 0x13
EXIT = 0x14
INFO = 0x15
ACK = 0x80
DATA = 0x81
STEP_DONE = 0x82
ERROR = 0xFF

# odl train's firmware (codegen/train.c.j2)
DATASET = 0x20
RUN = 0x21
RUN_DONE = 0x83

ERR_CRC, ERR_UNKNOWN_TYPE, ERR_RANGE, ERR_MALFORMED, ERR_TOO_LONG = 1, 2, 3, 4, 5

NAMES = {HELLO: "HELLO", WRITE: "WRITE", READ: "READ", STEP: "STEP", DUMP: "DUMP", EXIT: "EXIT", INFO: "INFO",
         ACK: "ACK", DATA: "DATA", STEP_DONE: "STEP_DONE", ERROR: "ERROR", DATASET: "DATASET", RUN: "RUN",
         RUN_DONE: "RUN_DONE"}

#: largest payload the device firmware accepts in one host->device frame (targets/common/protocol.h)
DEVICE_MAX_PAYLOAD = 8192 + 64
CHUNK = 4096


class ProtocolError(ToolError):
    """Malformed traffic, a timeout, or an ERROR reply from the device."""


class DeviceError(ProtocolError):
    """The device answered with an ERROR frame."""

    def __init__(self, code: int, message: str):
        super().__init__(f"device error {code}: {message}")
        self.code = code
        self.device_message = message


def crc(type_: int, payload: bytes) -> int:
    return zlib.crc32(bytes([type_]) + struct.pack("<I", len(payload)) + payload) & 0xFFFFFFFF


def encode(type_: int, payload: bytes = b"") -> bytes:
    payload = bytes(payload)
    body = bytes([type_]) + struct.pack("<I", len(payload)) + payload
    return MAGIC + body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def decode(buf: bytes) -> tuple[int, bytes, int]:
    """Decode one frame at the start of buf (after any garbage before the magic).
    Returns (type, payload, bytes consumed). Raises ProtocolError on a bad CRC or an incomplete frame."""
    i = buf.find(MAGIC)
    if i < 0 or len(buf) < i + 7:
        raise ProtocolError("incomplete frame")
    t = buf[i + 2]
    (n,) = struct.unpack_from("<I", buf, i + 3)
    end = i + 7 + n + 4
    if len(buf) < end:
        raise ProtocolError("incomplete frame")
    payload = bytes(buf[i + 7:i + 7 + n])
    (c,) = struct.unpack_from("<I", buf, i + 7 + n)
    if c != crc(t, payload):
        raise ProtocolError(f"bad CRC on {NAMES.get(t, hex(t))} frame")
    return t, payload, end


@dataclass(frozen=True)
class Hello:
    version: int
    num_cores: int
    precision_bits: int
    arena_addr: int
    arena_bytes: int


@dataclass(frozen=True)
class RunResult:
    """Reply to RUN: a training step's loss (or 0 for evaluation), whether the update was skipped (Inf/NaN
    gradients under loss scaling), the counters, the loss scale after the step, and an evaluation's payload."""
    loss: float
    skipped: bool
    cycles: int
    instret: int
    scale: float
    data: bytes


@dataclass(frozen=True)
class StepResult:
    loss: float
    count: int
    cycles: int
    instret: int


class Link:
    """Host end of the protocol over a pyserial-like port (read(n) returns b'' / short on timeout)."""

    def __init__(self, port, timeout: float = 30.0, max_garbage: int = 1 << 16):
        self.port = port
        self.timeout = timeout
        self.max_garbage = max_garbage
        self.hello_info: Hello | None = None
        self.garbage = bytearray()   # bytes seen outside frames (e.g. a trap report from the firmware)

    # -- raw frames -------------------------------------------------------------------------------
    def send(self, type_: int, payload: bytes = b"") -> None:
        self.port.write(encode(type_, payload))
        flush = getattr(self.port, "flush", None)
        if flush:
            flush()

    def _read_exact(self, n: int, deadline: float, what: str) -> bytes:
        out = bytearray()
        while len(out) < n:
            if time.monotonic() > deadline:
                raise ProtocolError(f"timeout waiting for {what} ({len(out)}/{n} bytes"
                                    + (f"; device said: {bytes(self.garbage[-300:]).decode('utf-8', 'replace')!r}"
                                       if self.garbage else "") + ")")
            try:
                chunk = self.port.read(n - len(out))
            except Exception as e:  # pyserial SerialException / OSError: the device or emulator went away
                said = bytes(self.garbage[-300:]) + bytes(out)
                raise ProtocolError(f"connection lost while waiting for {what}: {e}"
                                    + (f"; device said: {said.decode('utf-8', 'replace')!r}" if said else "")) from e
            if chunk:
                out += chunk
        return bytes(out)

    def recv(self, timeout: float | None = None, what: str = "a frame") -> tuple[int, bytes]:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        prev = b""
        skipped = 0
        while True:
            b = self._read_exact(1, deadline, what)
            if prev == b"O" and b == b"D":
                break
            if prev:
                self.garbage += prev
                skipped += 1
                if skipped > self.max_garbage:
                    raise ProtocolError(f"no frame in {skipped} bytes while waiting for {what}")
            prev = b
        hdr = self._read_exact(5, deadline, what)
        t = hdr[0]
        (n,) = struct.unpack_from("<I", hdr, 1)
        payload = self._read_exact(n, deadline, what)
        (c,) = struct.unpack("<I", self._read_exact(4, deadline, what))
        if c != crc(t, payload):
            raise ProtocolError(f"bad CRC on a {NAMES.get(t, hex(t))} frame from the device")
        return t, payload

    def request(self, type_: int, payload: bytes, expect: int, timeout: float | None = None) -> bytes:
        self.send(type_, payload)
        t, p = self.recv(timeout, what=f"reply to {NAMES.get(type_, hex(type_))}")
        if t == ERROR:
            code = struct.unpack_from("<I", p)[0] if len(p) >= 4 else -1
            raise DeviceError(code, p[4:].decode("utf-8", "replace"))
        if t != expect:
            raise ProtocolError(f"expected {NAMES.get(expect, hex(expect))} in reply to {NAMES.get(type_, hex(type_))}, got {NAMES.get(t, hex(t))}")
        return p

    # -- commands ---------------------------------------------------------------------------------
    def hello(self, timeout: float | None = None) -> Hello:
        """Wait for the device's HELLO (sent once after boot)."""
        t, p = self.recv(timeout, what="HELLO")
        if t != HELLO:
            raise ProtocolError(f"expected HELLO, got {NAMES.get(t, hex(t))} ({len(p)} bytes)")
        return self._hello(p)

    def info(self, timeout: float | None = None) -> Hello:
        """Ask a running device for its HELLO (INFO request)."""
        return self._hello(self.request(INFO, b"", HELLO, timeout))

    def _hello(self, p: bytes) -> Hello:
        if len(p) < 20:
            raise ProtocolError(f"malformed HELLO ({len(p)} bytes)")
        h = Hello(*struct.unpack_from("<5I", p))
        if h.version != VERSION:
            raise ProtocolError(f"device speaks protocol version {h.version}, host {VERSION}")
        self.hello_info = h
        return h

    def _ack(self, p: bytes, what: str) -> int:
        if len(p) != 4:
            raise ProtocolError(f"malformed ACK to {what}")
        return struct.unpack("<I", p)[0]

    def write(self, offset: int, data: bytes, chunk: int = CHUNK) -> None:
        data = memoryview(bytes(data))
        for i in range(0, len(data), chunk):
            part = data[i:i + chunk]
            st = self._ack(self.request(WRITE, struct.pack("<I", offset + i) + part.tobytes(), ACK), "WRITE")
            if st:
                raise ProtocolError(f"WRITE at {offset + i} failed with status {st}")

    def read(self, offset: int, n: int, chunk: int = CHUNK) -> bytes:
        out = bytearray()
        for i in range(0, n, chunk):
            k = min(chunk, n - i)
            p = self.request(READ, struct.pack("<II", offset + i, k), DATA)
            if len(p) != k:
                raise ProtocolError(f"READ returned {len(p)} bytes, asked {k}")
            out += p
        return bytes(out)

    def step(self, count: int = 1, timeout: float | None = None) -> StepResult:
        p = self.request(STEP, struct.pack("<I", count), STEP_DONE, timeout)
        if len(p) != 24:
            raise ProtocolError("malformed STEP_DONE")
        loss, cnt, cyc, ins = struct.unpack("<fIQQ", p)
        return StepResult(loss, cnt, cyc, ins)

    def dump(self, offset: int, n: int, filename: str, timeout: float | None = None) -> None:
        """Ask the device to write arena[offset:offset+n] to a host file via semihosting (relative to the
        emulator's working directory)."""
        name = filename.encode()
        st = self._ack(self.request(DUMP, struct.pack("<II", offset, n) + name, ACK, timeout), "DUMP")
        if st:
            raise ProtocolError(f"DUMP to {filename!r} failed on the device (status {st}: "
                                + {1: "open", 2: "write", 3: "close"}.get(st, "?") + " failed; is semihosting on?)")

    def exit(self, code: int = 0) -> None:
        st = self._ack(self.request(EXIT, struct.pack("<I", code & 0xFFFFFFFF), ACK), "EXIT")
        if st:
            raise ProtocolError(f"EXIT refused with status {st}")

    def dataset(self, x_off: int, x_stride: int, y_off: int, y_stride: int, count: int) -> None:
        """Tell odl train's firmware where the samples lie in its data region (offsets in bytes)."""
        st = self._ack(self.request(DATASET, struct.pack("<5I", x_off, x_stride, y_off, y_stride, count), ACK),
                       "DATASET")
        if st:
            raise ProtocolError(f"DATASET refused with status {st}")

    def run(self, program: int, indices=(), timeout: float | None = None) -> RunResult:
        """Run program `program` of odl train's firmware on the samples `indices` of the data region (gathered
        on the device), or with no indices on what WRITE put into the program's buffers."""
        idx = list(indices)
        p = self.request(RUN, struct.pack(f"<II{len(idx)}I", program, len(idx), *idx), RUN_DONE, timeout)
        if len(p) < 28:
            raise ProtocolError("malformed RUN_DONE")
        loss, flags, cyc, ins, scale = struct.unpack_from("<fIQQf", p)
        return RunResult(loss, bool(flags & 1), cyc, ins, scale, p[28:])
