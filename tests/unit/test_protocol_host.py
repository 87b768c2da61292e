"""The host side of the protocol (odl/run/protocol.py), property-based (hypothesis): the parser never raises, never
returns a frame that was not sent, finds every sent frame through garbage and damage, and Link.request returns the
right reply through a simulated link that damages bytes."""
import random
import struct

from hypothesis import given, settings, strategies as st

from odl.run import protocol as P

frames = st.lists(st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=300)), max_size=6)


def parse_all(buf):
    out, buf = [], bytearray(buf)
    while True:
        kind, v, n = P.parse(buf)
        assert 0 <= n <= len(buf)
        if kind == "frame":
            out.append((v.type, v.seq, v.payload))
        elif kind == "need":
            return out
        del buf[:n]
        if kind != "need":
            assert n > 0


@given(st.binary(max_size=2000))
def test_parse_never_raises_on_garbage(data):
    parse_all(data)


@given(frames, st.lists(st.binary(max_size=40), min_size=7, max_size=7))
def test_frames_found_through_garbage(fs, junk):
    stream = b"".join(junk[i].replace(b"O", b"o") + P.encode(t, p, s) for i, (t, s, p) in enumerate(fs)) + junk[6]
    assert parse_all(stream) == [(t, s, p) for t, s, p in fs]


@given(frames, st.data())
def test_damage_never_yields_a_wrong_frame(fs, data):
    """One byte flipped, dropped or duplicated per frame: every frame returned is one that was sent, unchanged
    (CRC32 catches every burst of <= 32 bits, the header CRC16 every burst of <= 16)."""
    sent = set()
    stream = bytearray()
    for t, s, p in fs:
        f = bytearray(P.encode(t, p, s))
        sent.add((t, s, p))
        i = data.draw(st.integers(0, len(f) - 1))
        op = data.draw(st.sampled_from(["flip", "drop", "dup", "none"]))
        if op == "flip":
            f[i] ^= data.draw(st.integers(1, 255))
        elif op == "drop":
            del f[i]
        elif op == "dup":
            f.insert(i, f[i])
        stream += f
    for fr in parse_all(stream):
        assert fr in sent


class LossyDevice:
    """A pyserial-like port backed by a tiny device model speaking protocol v2 (ACCEPTED, kept replies), with a
    seeded damage rate on both directions."""

    def __init__(self, rate, seed):
        self.rng = random.Random(seed)
        self.rate = rate
        self.rx, self.tx = bytearray(), bytearray()
        self.last_seq, self.kept, self.counter = 0, None, 0
        self.baudrate = 10 ** 6

    def _damage(self, b):
        out = bytearray()
        for c in b:
            r = self.rng.random()
            if r < self.rate / 3:
                out.append(c ^ 0xA5)
            elif r < 2 * self.rate / 3:
                pass
            elif r < self.rate:
                out += bytes([c, c])
            else:
                out.append(c)
        return out

    def write(self, b):
        self.rx += self._damage(b)
        while True:
            kind, v, n = P.parse(self.rx, P.DEVICE_MAX_PAYLOAD)
            if kind == "need":
                return len(b)
            del self.rx[:n]
            if kind == "frame":
                self._serve(v)

    def _serve(self, f):
        if f.seq and f.seq == self.last_seq:
            self.tx += self._damage(self.kept)
            return
        self.tx += self._damage(P.encode(P.ACCEPTED, b"", f.seq))
        self.counter += 1                       # the "STEP": must run once per request
        reply = P.encode(P.STEP_DONE, struct.pack("<fIQQ", 0.5, self.counter, 7, 9), f.seq)
        self.last_seq, self.kept = f.seq, reply
        self.tx += self._damage(reply)

    @property
    def in_waiting(self):
        return len(self.tx)

    def read(self, n):
        out = bytes(self.tx[:n])
        del self.tx[:n]
        return out


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10 ** 6))
def test_request_survives_a_lossy_link(seed):
    dev = LossyDevice(0.01, seed)
    link = P.Link(dev, timeout=5, base_timeout=0.01, quiet=0.0)
    for k in range(1, 6):
        res = link.step(1)
        assert res.count == k == dev.counter    # every step ran exactly once, replies in order


def test_babbling_device_is_refused_quickly():
    """A device that sends only noise (wrong baud rate): an error naming the command, not a long wait."""
    import time

    import pytest

    class Noise:
        baudrate = 10 ** 6
        in_waiting = 512

        def write(self, b):
            return len(b)

        def read(self, n):
            return bytes(random.Random(n).randrange(256) for _ in range(n)).replace(b"O", b"o")

    t0 = time.monotonic()
    with pytest.raises(P.ProtocolError, match="STEP: .* bytes from the device and no valid frame"):
        P.Link(Noise(), timeout=60, max_garbage=4096).step(1)
    assert time.monotonic() - t0 < 5
