"""odl host<->device framed protocol, version 2 (host side). The same code runs over QEMU/Renode sockets and real
serial ports: `Link` takes any pyserial-like object with read(n) / write(b) and a read timeout.

Frame: b"OD" | u8 type | u16 LE seq | u32 LE payload length | u16 LE hcrc | payload | u32 LE CRC32
(hcrc = low 16 bits of zlib.crc32 of type+seq+length; CRC32 = zlib.crc32 of type+seq+length+payload).

Reliability (the device side is targets/common/protocol.c and the loop in main.c; both are generic, so any command
added later gets it): every request carries a new seq; the device answers a valid one with ACCEPTED(seq) before it
runs it and then with one reply frame tagged seq, and answers a repeat of the last seq from a kept copy without
running it again. The host retransmits the same frame when the device reports it damaged (ERROR CRC under its
seq), when the reply comes back damaged (a bad CRC, bytes outside any frame, a frame cut short), or when nothing
comes back (timeouts scale with the frame sizes and the link's byte rate, doubling per retry); after ACCEPTED it
waits as long as the command may run. Bounded retries, then a ProtocolError naming the command.
"""
from __future__ import annotations

import os
import struct
import sys
import time
import zlib
from dataclasses import dataclass

from odl.common.errors import ToolError

MAGIC = b"OD"
VERSION = 2
HDR = 9                 # bytes after the magic: type, seq, length, hcrc
SEQ_BOOT = 0xFFFF       # seq of the HELLO a device sends at boot (hosts number requests 1..0xFFFE)
OVERHEAD = 2 + HDR + 4  # bytes of a frame besides its payload

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
ACCEPTED = 0x83
ERROR = 0xFF

ERR_CRC, ERR_UNKNOWN_TYPE, ERR_RANGE, ERR_MALFORMED, ERR_TOO_LONG, ERR_NOT_CACHED = 1, 2, 3, 4, 5, 6

# odl train's firmware (templates/train.c.j2)
DATASET = 0x20
RUN = 0x21
RUN_DONE = 0x84

NAMES = {HELLO: "HELLO", WRITE: "WRITE", READ: "READ", STEP: "STEP", DUMP: "DUMP", EXIT: "EXIT", INFO: "INFO",
         ACK: "ACK", DATA: "DATA", STEP_DONE: "STEP_DONE", ACCEPTED: "ACCEPTED", ERROR: "ERROR", DATASET: "DATASET",
         RUN: "RUN", RUN_DONE: "RUN_DONE"}

#: largest payload the device firmware accepts in one host->device frame (targets/common/protocol.h)
DEVICE_MAX_PAYLOAD = 8192 + 64
#: largest reply the device keeps for a repeated request (ODL_MAX_CACHED_REPLY): READs are chunked below it
DEVICE_MAX_CACHED_REPLY = 8192 + 64
#: largest payload the host accepts from the device; a sound header asking more is treated as damage
HOST_MAX_PAYLOAD = 1 << 20
CHUNK = 4096
START_CHUNK = 1024
MIN_CHUNK = 64


class ProtocolError(ToolError):
    """Malformed traffic, a timeout, or an ERROR reply from the device."""


class RetriesExhausted(ProtocolError):
    """A request got no valid reply within its allowed number of sends."""


class DeviceError(ProtocolError):
    """The device answered with an ERROR frame."""

    def __init__(self, code: int, message: str):
        super().__init__(f"device error {code}: {message}")
        self.code = code
        self.device_message = message


def name_of(type_: int) -> str:
    return NAMES.get(type_, hex(type_))


def _header(type_: int, seq: int, n: int) -> bytes:
    h = struct.pack("<BHI", type_, seq & 0xFFFF, n)
    return h + struct.pack("<H", zlib.crc32(h) & 0xFFFF)


def crc(type_: int, payload: bytes, seq: int = 0) -> int:
    return zlib.crc32(payload, zlib.crc32(_header(type_, seq, len(payload))[:7])) & 0xFFFFFFFF


def encode(type_: int, payload: bytes = b"", seq: int = 0) -> bytes:
    payload = bytes(payload)
    h = _header(type_, seq, len(payload))
    return MAGIC + h + payload + struct.pack("<I", zlib.crc32(payload, zlib.crc32(h[:7])) & 0xFFFFFFFF)


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes


def parse(buf, max_payload: int = HOST_MAX_PAYLOAD) -> tuple[str, object, int]:
    """Look for one frame at the start of buf. Returns (kind, value, consumed):
    ("frame", Frame, n): a frame whose header and payload CRCs hold ends at n (bytes before its magic are garbage);
    ("bad", reason, n): a frame starting at the magic is damaged; drop n bytes (through its magic) and parse again,
                        since the damaged frame may have swallowed the start of a good one;
    ("need", None, n): more bytes are needed; the first n bytes are garbage and can be dropped.
    Never raises; consumed <= len(buf)."""
    if not isinstance(buf, (bytes, bytearray)):
        buf = bytes(buf)
    i = buf.find(MAGIC)
    if i < 0:
        keep = 1 if len(buf) and buf[-1] == MAGIC[0] else 0
        return "need", None, len(buf) - keep
    if len(buf) < i + 2 + HDR:
        return "need", None, i
    h = bytes(buf[i + 2:i + 2 + HDR])
    if zlib.crc32(h[:7]) & 0xFFFF != struct.unpack_from("<H", h, 7)[0]:
        return "bad", "damaged header", i + 2
    t, seq, n = struct.unpack_from("<BHI", h)
    if n > max_payload:
        return "bad", f"{name_of(t)} frame of {n} bytes (limit {max_payload})", i + 2
    end = i + 2 + HDR + n + 4
    if len(buf) < end:
        return "need", None, i
    payload = bytes(buf[i + 2 + HDR:end - 4])
    (c,) = struct.unpack_from("<I", buf, end - 4)
    if c != zlib.crc32(payload, zlib.crc32(h[:7])) & 0xFFFFFFFF:
        return "bad", f"bad CRC on a {name_of(t)} frame", i + 2
    return "frame", Frame(t, seq, payload), end


def decode(buf: bytes) -> tuple[int, bytes, int]:
    """Decode one frame at the start of buf (after any garbage before the magic).
    Returns (type, payload, bytes consumed). Raises ProtocolError on a damaged or incomplete frame."""
    kind, v, n = parse(buf)
    if kind == "frame":
        return v.type, v.payload, n
    raise ProtocolError("incomplete frame" if kind == "need" else v)


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
    """STEP_DONE: the loss of the last step and the device's counter deltas around `count` steps. Both counters are
    read on hart 0 around the whole step: under QEMU `-icount` every hart reads one global counter, so they are
    the instructions of all harts together (not the critical path `odl profile` reports; see profile.py)."""
    loss: float
    count: int
    cycles: int
    instret: int

    def labelled(self) -> dict:
        return {"device_cycles_all_harts": self.cycles, "device_instructions_all_harts": self.instret}


@dataclass
class LinkStats:
    requests: int = 0
    retransmissions: int = 0       # request frames sent again
    damaged_frames: int = 0        # device frames dropped for a bad CRC / cut short
    garbage_bytes: int = 0         # bytes outside any frame
    stale_frames: int = 0          # valid frames of an older seq (replies to a retransmission already answered)
    device_rejected: int = 0       # requests the device reported damaged (ERROR CRC)


class Link:
    """Host end of the protocol over a pyserial-like port (read(n) returns b'' / short on timeout).

    timeout: how long a command may run on the device once ACCEPTED (a STEP of a big model takes seconds of
    emulated time; a hung kernel is reported after this). bytes_per_s: the link's byte rate, to scale the wait for
    a reply to a frame's size (default: the port's baud rate / 10, at most 2000 B/s: QEMU's UART moves ~5 KB/s).
    retries: how many times one request is sent again before the command fails."""

    def __init__(self, port, timeout: float = 30.0, max_garbage: int = 1 << 16, bytes_per_s: float | None = None,
                 retries: int = 10, base_timeout: float = 0.5, quiet: float = 0.25):
        self.port = port
        self.timeout = timeout
        self.max_garbage = max_garbage
        self.bytes_per_s = bytes_per_s or min(2000.0, float(getattr(port, "baudrate", 20000) or 20000) / 10)
        self.retries = retries
        self.base_timeout = base_timeout
        self.quiet = quiet
        self.hello_info: Hello | None = None
        self.garbage = bytearray()   # bytes seen outside frames (e.g. a trap report from the firmware), last 4 KB
        self.stats = LinkStats()
        self._buf = bytearray()
        self._seq = 0
        self.chunk, self._clean = START_CHUNK, 0   # current bulk chunk (see _adapt)
        self._measured = 0.0                   # bytes/s of clean exchanges (moving average)
        self._last_rx = self._last_tx = time.monotonic()
        self.trace = os.environ.get("ODL_LINK_TRACE", "") not in ("", "0")   # every event on stderr (debugging)
        if isinstance(getattr(port, "timeout", None), (int, float)) and port.timeout > 0.05:
            port.timeout = 0.05   # wait for bytes in short slices: timeouts and quiet-line checks stay precise

    def _log(self, msg: str) -> None:
        if self.trace:
            print(f"odl link {time.monotonic():.3f} {msg}", file=sys.stderr, flush=True)

    # -- bytes and frames ---------------------------------------------------------------------------
    def _xfer(self, nbytes: int) -> float:
        """Seconds to move nbytes: at the configured rate, or at half the rate measured on clean exchanges when
        that is faster (QEMU's UART moves ~10 KB/s where a board's baud rate says nothing)."""
        return nbytes / max(self.bytes_per_s, 0.5 * self._measured)

    def _write(self, frame: bytes) -> None:
        try:
            self.port.write(frame)
            flush = getattr(self.port, "flush", None)
            if flush:
                flush()
        except Exception as e:  # pyserial SerialException / OSError
            raise ProtocolError(f"connection lost while sending: {e}{self._said()}") from e

    def send(self, type_: int, payload: bytes = b"", seq: int = 0) -> None:
        self._write(encode(type_, payload, seq))

    def _said(self) -> str:
        g = bytes(self.garbage[-300:]).decode("utf-8", "replace").strip()
        return f"; device said: {g!r}" if g else ""

    def _fill(self, what: str) -> bool:
        """Read what the port has (waiting at most its read timeout). True if bytes came."""
        try:
            chunk = self.port.read(1)
            if chunk:
                more = getattr(self.port, "in_waiting", 0)
                if more:
                    chunk += self.port.read(more)
        except Exception as e:  # pyserial SerialException / OSError: the device or emulator went away
            self._drop_garbage(len(self._buf))
            raise ProtocolError(f"connection lost while waiting for {what}: {e}{self._said()}") from e
        if chunk:
            self._buf += chunk
            self._last_rx = time.monotonic()
            return True
        return False

    def _drop_garbage(self, n: int) -> None:
        if n:
            self.garbage += self._buf[:n]
            del self.garbage[:-4096]
            self.stats.garbage_bytes += n
            del self._buf[:n]

    def _next(self) -> tuple[str, object]:
        """Parse the receive buffer: ("frame", Frame), ("bad", reason) or ("need", pending) where pending says
        whether the buffer holds the start of a frame or had garbage."""
        kind, v, n = parse(self._buf)
        if kind == "frame":
            i = self._buf.find(MAGIC)
            self._drop_garbage(i)
            del self._buf[:n - i]
            return "frame", v
        if kind == "bad":
            self.stats.damaged_frames += 1
            i = self._buf.find(MAGIC)
            self._drop_garbage(i)
            del self._buf[:n - i]
            return "bad", v
        dirty = n > 0
        self._drop_garbage(n)
        return "need", dirty or len(self._buf) > 1

    def recv(self, timeout: float | None = None, what: str = "a frame") -> tuple[int, bytes]:
        """The next valid frame (damaged ones are skipped): (type, payload)."""
        f = self.recv_frame(timeout, what)
        return f.type, f.payload

    def recv_frame(self, timeout: float | None = None, what: str = "a frame") -> Frame:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            kind, v = self._next()
            if kind == "frame":
                return v
            if kind == "need":
                if time.monotonic() > deadline:
                    raise ProtocolError(f"timeout waiting for {what} ({len(self._buf)} bytes of a frame)"
                                        + self._said())
                self._fill(what)

    # -- requests -------------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFE + 1     # 1..65534; 0 is the session start, 65535 the boot HELLO
        return self._seq

    def request(self, type_: int, payload: bytes, expect: int, timeout: float | None = None,
                reply_bytes: int = 64, seq: int | None = None, retries: int | None = None,
                boot_hello_ok: bool = False) -> bytes:
        """Send a request and return the payload of its reply (of type `expect`), retransmitting as needed.
        timeout: how long it may run once the device ACCEPTED it (default: self.timeout); reply_bytes: the
        expected reply size (scales the wait for it)."""
        what = name_of(type_)
        seq = self._next_seq() if seq is None else seq
        frame = encode(type_, payload, seq)
        run_timeout = self.timeout if timeout is None else timeout
        # time for the request to arrive, the device to parse it, and ACCEPTED to come back
        answer = self.base_timeout + 2 * self._xfer(len(frame) + OVERHEAD)
        reply = self.base_timeout + 2 * self._xfer(reply_bytes + OVERHEAD)
        self.stats.requests += 1
        t_first = time.monotonic()
        sends, silent, problems = 0, 0, []
        accepted = False

        def resend(reason: str) -> float:
            nonlocal sends
            problems.append(reason)
            if sends > (self.retries if retries is None else retries):
                raise RetriesExhausted(f"{what}: no valid reply after {sends} attempts "
                                    f"({time.monotonic() - t_first:.1f} s; {'; '.join(dict.fromkeys(problems))})"
                                    + self._said())
            if sends:
                self.stats.retransmissions += 1
            self._log(f"send {what} seq {seq} ({len(frame)} bytes){' again: ' + reason if sends else ''}")
            self._write(frame)
            self._last_tx = time.monotonic()
            sends += 1
            # after silence wait longer each time (the device may be busy with a long command whose ACCEPTED was lost)
            return time.monotonic() + answer * 2 ** min(silent, 6)

        wait_until = resend("")
        problems.clear()
        dirty = False
        garbage0 = self.stats.garbage_bytes
        while True:
            kind, v = self._next()
            now = time.monotonic()
            if self.stats.garbage_bytes - garbage0 > self.max_garbage:
                raise ProtocolError(f"{what}: {self.stats.garbage_bytes - garbage0} bytes from the device and no "
                                    f"valid frame (wrong baud rate, or not odl firmware?){self._said()}")
            if kind == "frame":
                f: Frame = v
                self._log(f"got {name_of(f.type)} seq {f.seq} ({len(f.payload)} bytes)")
                if f.seq != seq:
                    if f.type == HELLO and f.seq == SEQ_BOOT and not boot_hello_ok:
                        raise ProtocolError(f"{what}: the device restarted (it sent HELLO) before answering"
                                            + self._said())
                    self.stats.stale_frames += 1
                    continue
                if f.type == ACCEPTED:
                    accepted, dirty = True, False
                    wait_until = now + run_timeout + reply
                    continue
                if f.type == ERROR:
                    code = struct.unpack_from("<I", f.payload)[0] if len(f.payload) >= 4 else -1
                    msg = f.payload[4:].decode("utf-8", "replace")
                    if code == ERR_CRC:      # our frame arrived damaged: send it again now
                        self.stats.device_rejected += 1
                        accepted, dirty = False, False
                        wait_until = resend("the device got it damaged")
                        continue
                    raise DeviceError(code, f"{what}: {msg}")
                if f.type != expect:
                    raise ProtocolError(f"expected {name_of(expect)} in reply to {what}, got {name_of(f.type)}")
                moved = len(frame) + len(f.payload) + 2 * OVERHEAD
                if sends == 1 and type_ != STEP and moved >= 512:   # a clean bulk exchange: how fast is the link?
                    rate = moved / max(now - t_first, 1e-3)
                    self._measured = rate if not self._measured else 0.7 * self._measured + 0.3 * rate
                return f.payload
            if kind == "bad":
                self._log(f"damaged: {v}")
                dirty = True
                continue
            dirty = dirty or v
            if dirty and now - max(self._last_rx, self._last_tx) > self.quiet + 2 * self._xfer(64):
                # damaged or cut-short reply and the line has gone quiet: ask again (the device answers a repeat
                # from its kept reply, or runs the request if it never got it)
                accepted, dirty = False, False
                wait_until = resend("damaged reply")
                continue
            if now > wait_until:
                if accepted:
                    raise ProtocolError(f"{what}: the device accepted it but sent no reply within {run_timeout:.0f} s "
                                        f"(a kernel that never returns?){self._said()}")
                if now - t_first > run_timeout + answer:
                    raise ProtocolError(f"{what}: no reply within {now - t_first:.0f} s after {sends} attempts "
                                        f"(is the device running odl firmware?){self._said()}")
                silent += 1
                wait_until = resend(f"no reply within {now - t_first:.1f} s")
                continue
            self._fill(f"the reply to {what}")

    # -- commands ---------------------------------------------------------------------------------
    def hello(self, timeout: float | None = None) -> Hello:
        """Wait for the device's HELLO (sent once after boot)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()), what="HELLO")
            if f.type == HELLO:
                return self._hello(f.payload)

    def info(self, timeout: float | None = None) -> Hello:
        """Ask a running device for its HELLO (INFO request). Starts a session: seq 0 makes the device forget the
        reply it kept from an earlier host."""
        self._seq = 0
        return self._hello(self.request(INFO, b"", HELLO, timeout, seq=0, boot_hello_ok=True))

    def _hello(self, p: bytes) -> Hello:
        if len(p) < 20:
            raise ProtocolError(f"malformed HELLO ({len(p)} bytes)")
        h = Hello(*struct.unpack_from("<5I", p))
        if h.version != VERSION:
            raise ProtocolError(f"device speaks protocol version {h.version}, host {VERSION} "
                                "(flash firmware built by this odl)")
        self.hello_info = h
        return h

    def _ack(self, p: bytes, what: str) -> int:
        if len(p) != 4:
            raise ProtocolError(f"malformed ACK to {what}")
        return struct.unpack("<I", p)[0]

    def _adapt(self, retransmitted: bool) -> None:
        """Bulk chunks shrink on a damaging link and grow back on a clean one (as TCP's window does): at 1 damaged
        byte in 1,000 a 4 KB frame gets through intact 2% of the time, a 256-byte one 77%."""
        if retransmitted:
            self.chunk = max(MIN_CHUNK, self.chunk // 2)
            self._clean = 0
        else:
            self._clean += 1
            if self._clean >= 8 and self.chunk < CHUNK:
                self.chunk *= 2
                self._clean = 0

    def _bulk(self, type_, payload, expect, reply_bytes=64, size=0) -> bytes | None:
        """One chunk of a READ/WRITE (both idempotent). A chunk above the minimum that fails 3 times is given up
        (None): the caller sends the same range again in smaller chunks."""
        before = self.stats.retransmissions
        try:
            p = self.request(type_, payload, expect, reply_bytes=reply_bytes,
                             retries=2 if size > MIN_CHUNK else None)
        except RetriesExhausted:
            if size <= MIN_CHUNK:
                raise
            self.chunk = max(MIN_CHUNK, min(self.chunk, size) // 2)
            self._clean = 0
            return None
        self._adapt(self.stats.retransmissions > before)
        return p

    def write(self, offset: int, data: bytes, chunk: int = CHUNK) -> None:
        data = memoryview(bytes(data))
        i = 0
        while i < len(data):
            part = data[i:i + min(chunk, self.chunk)]
            p = self._bulk(WRITE, struct.pack("<I", offset + i) + part.tobytes(), ACK, size=len(part))
            if p is None:
                continue
            st = self._ack(p, "WRITE")
            if st:
                raise ProtocolError(f"WRITE at {offset + i} failed with status {st}")
            i += len(part)

    def read(self, offset: int, n: int, chunk: int = CHUNK) -> bytes:
        chunk = min(chunk, DEVICE_MAX_CACHED_REPLY)
        out = bytearray()
        while len(out) < n:
            k = min(chunk, self.chunk, n - len(out))
            p = self._bulk(READ, struct.pack("<II", offset + len(out), k), DATA, reply_bytes=k, size=k)
            if p is None:
                continue
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
