"""A TCP proxy that damages the bytes between the host (pyserial socket://) and an emulated board's UART: each byte,
with probability `rate` and independently in each direction, is flipped, dropped, duplicated or delayed. Seeded:
the same seed damages the same byte positions. Used by the link tests (test_link_faults.py)."""
from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Damage:
    bytes: int = 0
    flipped: int = 0
    dropped: int = 0
    duplicated: int = 0
    delayed: int = 0

    @property
    def damaged(self) -> int:
        return self.flipped + self.dropped + self.duplicated


@dataclass
class FaultProxy:
    """with FaultProxy(upstream_port, rate=1e-3, seed=1) as p: serial_for_url(p.url) ...
    rate: probability that a byte is damaged (flipped, dropped or duplicated); delay_rate: that the stream stalls
    (up to max_delay_s) before a byte."""
    upstream_port: int
    rate: float = 1e-3
    seed: int = 0
    kinds: tuple = ("flip", "drop", "dup")
    delay_rate: float | None = None   # default: = rate
    max_delay_s: float = 0.05
    to_device: Damage = field(default_factory=Damage)
    to_host: Damage = field(default_factory=Damage)

    def __enter__(self) -> "FaultProxy":
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(1)
        self.port = self._srv.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._socks = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for s in [self._srv, *self._socks]:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                host, _ = self._srv.accept()
            except OSError:
                return
            dev = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._socks += [host, dev]
            for src, dst, dmg, salt in ((host, dev, self.to_device, 1), (dev, host, self.to_host, 2)):
                t = threading.Thread(target=self._pump, args=(src, dst, dmg, random.Random(self.seed * 7919 + salt)),
                                     daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src, dst, dmg: Damage, rng: random.Random) -> None:
        while not self._stop.is_set():
            try:
                data = src.recv(4096)
            except OSError:
                return
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            out = bytearray()
            delay_rate = self.rate if self.delay_rate is None else self.delay_rate
            for b in data:
                dmg.bytes += 1
                if rng.random() < delay_rate:
                    dmg.delayed += 1
                    try:
                        dst.sendall(bytes(out))
                    except OSError:
                        return
                    out.clear()
                    time.sleep(rng.uniform(0, self.max_delay_s))
                if rng.random() >= self.rate:
                    out.append(b)
                    continue
                kind = rng.choice(self.kinds)
                if kind == "flip":
                    dmg.flipped += 1
                    out.append(b ^ rng.randrange(1, 256))
                elif kind == "drop":
                    dmg.dropped += 1
                else:
                    dmg.duplicated += 1
                    out += bytes([b, b])
            try:
                dst.sendall(bytes(out))
            except OSError:
                return
