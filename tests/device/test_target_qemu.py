"""End-to-end tests of the rv32-cluster target on QEMU: firmware shell, team, protocol, preload, semihosting."""
from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest

from odl.run import protocol
from odl.run.protocol import DeviceError, Link
from odl.run.runners import QemuRunner, RunnerError
from odl.target.description import load_target
from odl.target.toolchain import CompileError, build_firmware

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which("qemu-system-riscv32") is None, reason="qemu-system-riscv32 not installed"),
]

ARENA_BYTES = 4096
RESULT_OFF = 1024     # model writes core_id+1 into words [RESULT_OFF/4 + core]

TEAM_MODEL = r"""
#include <stdint.h>
#include "odl_team.h"
unsigned char odl_arena[4096] __attribute__((section(".odl_arena"), aligned(64)));
const uint32_t odl_arena_bytes = sizeof odl_arena;
static void task(void *a) {
  volatile uint32_t *w = (volatile uint32_t *)a;
  int id = odl_core_id();
  w[id] += (uint32_t)(id + 1);           /* += : a second step doubles it */
  odl_barrier();                         /* everyone sees everyone's word after the barrier */
  uint32_t s = 0;
  for (int i = 0; i < odl_num_cores(); i++) s += w[i];
  w[16 + id] = s;
  odl_barrier();
}
float odl_model_step(void) {
  uint32_t *w = (uint32_t *)(odl_arena + 1024);
  odl_parallel(task, w);
  float s = 0.0f;
  for (int i = 0; i < odl_num_cores(); i++) s += (float)w[i];
  return s * 0.5f;
}
"""

# v2f16 fused multiply-add on every core: out[k] = c[k] + a[k] * b[k] (vector x vector) and
# out2[k] = c[k] + a[k] * s (vector x scalar -> vfmacc.vf), inputs preloaded into the arena.
FP16_MODEL = r"""
#include <stdint.h>
#include "odl_types.h"
#include "odl_team.h"
unsigned char odl_arena[4096] __attribute__((section(".odl_arena"), aligned(64)));
const uint32_t odl_arena_bytes = sizeof odl_arena;
#define N 64          /* pairs */
static void task(void *unused) {
  (void)unused;
  const odl_v2_t *a = (const odl_v2_t *)(odl_arena + 0);
  const odl_v2_t *b = (const odl_v2_t *)(odl_arena + 4 * N);
  const odl_v2_t *c = (const odl_v2_t *)(odl_arena + 8 * N);
  const odl_t s = *(const odl_t *)(odl_arena + 12 * N);
  odl_v2_t *o1 = (odl_v2_t *)(odl_arena + 16 * N);
  odl_v2_t *o2 = (odl_v2_t *)(odl_arena + 20 * N);
  int lo, hi;
  odl_split(N, &lo, &hi);
  for (int k = lo; k < hi; k++) {
    o1[k] = c[k] + a[k] * b[k];
    o2[k] = c[k] + a[k] * s;
  }
}
float odl_model_step(void) { odl_parallel(task, 0); return (float)((odl_t *)(odl_arena + 16 * N))[0]; }
"""


@pytest.fixture(scope="module")
def target():
    return load_target("rv32-cluster")


@pytest.fixture(scope="module")
def team_elfs(target, tmp_path_factory):
    d = tmp_path_factory.mktemp("fw")
    src = d / "team_model.c"
    src.write_text(TEAM_MODEL)
    return {c: build_firmware(target, "fp32", c, [src], [], d / f"team{c}", kernels=False) for c in (1, 8)}


def test_target_json(target):
    assert target.harts == 8 and target.simd_lanes_fp16 == 2
    assert target.memory_budget_bytes == 1572864
    assert target.arena_addr == 0x80200000 and target.ram_base == 0x80000000
    assert all(p.is_file() for p in target.sources) and target.linker_script.is_file()


def test_elf_layout(team_elfs):
    """Reset code first at 0x80000000, arena exactly at 0x80200000 and NOLOAD (not in the image)."""
    objdump = shutil.which("llvm-objdump")
    if objdump is None:
        pytest.skip("llvm-objdump not installed")
    out = subprocess.run([objdump, "-t", "-h", str(team_elfs[8])], capture_output=True, text=True).stdout
    assert any(line.startswith("80000000") and "_start" in line for line in out.splitlines())
    assert any(line.startswith("80200000") and "odl_arena" in line for line in out.splitlines())


def test_compile_error_carries_message(target, tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("int f(void) { return undefined_thing; }\n")
    with pytest.raises(CompileError, match="undefined_thing"):
        build_firmware(target, "fp32", 1, [bad], [], tmp_path / "out", kernels=False)


@pytest.mark.parametrize("cores", [1, 8])
def test_team_protocol(target, team_elfs, tmp_path, cores):
    blob = bytes(range(200)) * 2
    with QemuRunner(target, team_elfs[cores], cores, tmp_path, preload=[(2048, blob)], timeout=20) as r:
        h = r.hello
        assert (h.version, h.num_cores, h.precision_bits) == (protocol.VERSION, cores, 32)
        assert (h.arena_addr, h.arena_bytes) == (0x80200000, ARENA_BYTES)
        # preloaded blob is in the arena (via the UART and via semihosting)
        assert r.link.read(2048, len(blob)) == blob
        assert r.read_arena(2048, len(blob)) == blob
        # WRITE / READ roundtrip, several chunks
        data = np.random.default_rng(cores).integers(0, 256, 1000, dtype=np.uint8).tobytes()
        r.link.write(100, data, chunk=300)
        assert r.link.read(100, len(data), chunk=256) == data
        # STEP: every core ran (word k == k+1) and saw the others after the barrier
        r.link.write(RESULT_OFF, bytes(32 * 4))
        res = r.link.step(1)
        words = struct.unpack(f"<{cores}I", r.read_arena(RESULT_OFF, 4 * cores))
        assert list(words) == [k + 1 for k in range(cores)]
        total = sum(words)
        sums = struct.unpack(f"<{cores}I", r.link.read(RESULT_OFF + 64, 4 * cores))
        assert list(sums) == [total] * cores
        assert res.count == 1 and res.loss == pytest.approx(total / 2)
        assert 0 < res.instret and 0 < res.cycles
        res2 = r.link.step(3)
        assert res2.count == 3 and res2.loss == pytest.approx(4 * total / 2)
        # DUMP of an empty range and errors keep the link usable
        assert r.read_arena(0, 0) == b""
        with pytest.raises(DeviceError) as e:
            r.link.read(ARENA_BYTES - 4, 8)
        assert e.value.code == protocol.ERR_RANGE
        with pytest.raises(DeviceError) as e:
            r.link.request(0x42, b"", protocol.ACK)
        assert e.value.code == protocol.ERR_UNKNOWN_TYPE
        # bad CRC -> ERROR, then the link still works
        frame = bytearray(protocol.encode(protocol.READ, struct.pack("<II", 0, 4)))
        frame[-1] ^= 0xFF
        r.port.write(bytes(frame))
        t, p = r.link.recv(timeout=10)
        assert t == protocol.ERROR and struct.unpack_from("<I", p)[0] == protocol.ERR_CRC
        assert b"CRC" in p[4:]
        assert r.link.read(2048, 4) == blob[:4]
        assert r.exit(0) == 0
    assert r.proc.returncode == 0


def test_exit_code_is_propagated(target, team_elfs, tmp_path):
    with QemuRunner(target, team_elfs[1], 1, tmp_path) as r:
        assert r.exit(3) == 3


def test_runners_started_side_by_side_each_talk_to_their_own_emulator(target, team_elfs, tmp_path):
    """odl listens and QEMU connects (odl.run.runners.uart_socket): runners started at once (a fleet's parallel devices)
    cannot swap or share emulators. Each writes its own bytes and reads them back; once every runner is up, no UART
    port takes a second client. (Not before: while another thread forks an emulator, the child holds a copy of the
    listening socket until it execs, and in a process as large as the test run that takes a while.)"""
    import socket
    import threading
    from concurrent.futures import ThreadPoolExecutor
    all_up = threading.Barrier(4)

    def one(i):
        with QemuRunner(target, team_elfs[1], 1, tmp_path / str(i)) as r:
            blob = bytes([i + 1]) * 64
            r.link.write(2048, blob)
            all_up.wait(timeout=60)
            port = int(next(a for a in r.cmdline if a.startswith("tcp:")).split(":")[2].split(",")[0])
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            got = r.read_arena(2048, 64)
            r.exit()
            return got == blob
    with ThreadPoolExecutor(4) as ex:
        assert list(ex.map(one, range(4))) == [True] * 4


def test_emulator_that_never_connects_is_reported(target, team_elfs, tmp_path):
    with pytest.raises(RunnerError, match=r"QEMU did not connect to its UART socket: QEMU exited with status 1"):
        with QemuRunner(target, team_elfs[1], 1, tmp_path, extra_args=["-no-such-option"]):
            pass


def test_step_counts_deterministic(target, team_elfs, tmp_path):
    """-icount shift=0: identical cycle/instret counts from run to run."""
    results = []
    for i in range(2):
        with QemuRunner(target, team_elfs[8], 8, tmp_path / str(i)) as r:
            results.append(r.link.step(2))
            r.exit()
    assert results[0] == results[1]


def test_fp16_simd_fma(target, tmp_path):
    """A v2f16 fused multiply-add on all 8 harts gives the right values (zvfh works, VS is on everywhere)."""
    src = tmp_path / "fp16_model.c"
    src.write_text(FP16_MODEL)
    elf = build_firmware(target, "fp16", 8, [src], [], tmp_path / "fw", kernels=False)
    objdump = shutil.which("llvm-objdump")
    if objdump:
        dis = subprocess.run([objdump, "-d", "--mattr=+v,+zvfh,+zfh", str(elf)], capture_output=True, text=True).stdout
        assert "vfmacc.v" in dis or "vfmadd.v" in dis, "expected RVV FP16 FMA in the fp16 build"
    n = 2 * 64
    rng = np.random.default_rng(0)
    a = rng.uniform(-2, 2, n).astype(np.float16)
    b = rng.uniform(-2, 2, n).astype(np.float16)
    c = rng.uniform(-2, 2, n).astype(np.float16)
    s = np.float16(0.75)
    blob = a.tobytes() + b.tobytes() + c.tobytes() + s.tobytes()
    with QemuRunner(target, elf, 8, tmp_path / "run", preload=[(0, blob)]) as r:
        assert r.hello.precision_bits == 16
        r.link.step(1)
        o1 = np.frombuffer(r.read_arena(8 * n, 2 * n), np.float16)
        o2 = np.frombuffer(r.read_arena(10 * n, 2 * n), np.float16)
        r.exit()
    # fused: one rounding of the exact result
    ref1 = (c.astype(np.float64) + a.astype(np.float64) * b.astype(np.float64)).astype(np.float16)
    ref2 = (c.astype(np.float64) + a.astype(np.float64) * np.float64(s)).astype(np.float16)
    np.testing.assert_array_equal(o1, ref1)
    np.testing.assert_array_equal(o2, ref2)


def test_link_timeout_is_clear():
    class Silent:
        def read(self, n):
            return b""

        def write(self, b):
            return len(b)

    with pytest.raises(protocol.ProtocolError, match="timeout waiting for HELLO"):
        Link(Silent(), timeout=0.2).hello()


def test_frame_roundtrip():
    f = protocol.encode(protocol.WRITE, b"\x01\x02\x03")
    assert f[:2] == b"OD" and f[2] == protocol.WRITE
    assert protocol.decode(b"junk" + f) == (protocol.WRITE, b"\x01\x02\x03", 4 + len(f))
    bad = f[:-1] + bytes([f[-1] ^ 1])
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(bad)


def test_trap_is_reported(target, tmp_path):
    """An illegal instruction in the model ends the run quickly with the trap cause in the error."""
    src = tmp_path / "trap_model.c"
    src.write_text('#include <stdint.h>\n'
                   'unsigned char odl_arena[64] __attribute__((section(".odl_arena"), aligned(64)));\n'
                   'const uint32_t odl_arena_bytes = sizeof odl_arena;\n'
                   'float odl_model_step(void) { __asm__ volatile(".word 0"); return 0; }\n')
    elf = build_firmware(target, "fp32", 8, [src], [], tmp_path / "fw", kernels=False)
    with pytest.raises(protocol.ProtocolError, match="mcause=00000002"):
        with QemuRunner(target, elf, 8, tmp_path / "run", timeout=20) as r:
            r.link.step(1)


def test_compiler_rt_helpers(target, tmp_path):
    """Soft double and 64-bit division come from the compiler's runtime library (zig's compiler_rt)."""
    src = tmp_path / "rt_model.c"
    src.write_text('#include <stdint.h>\n'
                   'unsigned char odl_arena[64] __attribute__((section(".odl_arena"), aligned(64)));\n'
                   'const uint32_t odl_arena_bytes = sizeof odl_arena;\n'
                   'float odl_model_step(void) {\n'
                   '  volatile double d = odl_arena[0]; volatile uint64_t u = 1000000000000ull + odl_arena[1];\n'
                   '  u = u / (odl_arena[2] + 1ull);\n'
                   '  return (float)(d * 1.5 + (double)(u % 1000));\n'
                   '}\n')
    elf = build_firmware(target, "fp32", 1, [src], [], tmp_path / "fw", kernels=False)
    with QemuRunner(target, elf, 1, tmp_path / "run", preload=[(0, bytes([4, 7, 2]))]) as r:
        res = r.link.step(1)
        r.exit()
    assert res.loss == pytest.approx(4 * 1.5 + (1000000000007 // 3) % 1000)


def test_find_cc_env(monkeypatch):
    from odl.common.errors import ToolError
    from odl.target.toolchain import find_cc
    monkeypatch.setenv("ODL_CC", "/nonexistent/odl-cc --flag")
    with pytest.raises(ToolError, match="ODL_CC"):
        find_cc()
    monkeypatch.delenv("ODL_CC")
    assert find_cc()[-2:] == ["ziglang", "cc"]


PROFILE_MODEL = r"""
#include <stdint.h>
#include "odl_team.h"
#include "odl_profile.h"
unsigned char odl_arena[4096] __attribute__((section(".odl_arena"), aligned(64)));
const uint32_t odl_arena_bytes = sizeof odl_arena;
static void task(void *a) {
  volatile uint32_t *w = (volatile uint32_t *)a;
  int id = odl_core_id();
  for (int i = 0; i < 1000 * (id + 1); i++) w[id] += 1;
}
float odl_model_step(void) {
  odl_parallel_profiled(task, odl_arena, (uint64_t *)(odl_arena + 1024));
  return 0.0f;
}
"""


def test_parallel_profiled_exact_per_core_counts(target, tmp_path):
    """odl_parallel_profiled: every core ran its share, and the per-core instruction counts are exact
    (linear in the work) and identical from run to run."""
    src = tmp_path / "prof_model.c"
    src.write_text(PROFILE_MODEL)
    elf = build_firmware(target, "fp32", 8, [src], [], tmp_path / "fw", kernels=False, defines=["ODL_PROFILE"])
    runs = []
    for i in range(2):
        with QemuRunner(target, elf, 8, tmp_path / f"run{i}") as r:
            r.link.step(1)
            words = struct.unpack("<8I", r.link.read(0, 32))
            counts = struct.unpack("<8Q", r.link.read(1024, 64))
            r.exit()
        assert list(words) == [1000 * (k + 1) for k in range(8)]
        runs.append(counts)
    assert runs[0] == runs[1]
    c = runs[0]
    per_1000 = c[2] - c[1]                       # instructions of 1000 loop iterations
    assert per_1000 >= 3000
    overhead = [c[k] - per_1000 * (k + 1) for k in range(8)]
    assert all(0 <= o < 64 for o in overhead), c  # only the constant measurement overhead remains
    assert len(set(overhead[1:])) == 1, c          # identical for every worker
