"""The device's frame parser and command handler (targets/common/protocol.c + main.c), compiled natively with
libFuzzer + ASan/UBSan (tests/fuzz/fuzz_protocol.c): no crash, no out-of-bounds access, no command run from bytes
that are not a CRC-valid frame, no STEP run twice. A few seconds here; `-m slow` runs two minutes."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import ROOT


def fuzz_cc():
    for cc in ("clang-19", "clang"):
        exe = shutil.which(cc)
        if exe and subprocess.run([exe, "-print-file-name=libclang_rt.fuzzer-x86_64.a"], capture_output=True,
                                  text=True).stdout.strip().startswith("/"):
            return exe
    return None


CC = fuzz_cc()
needs_libfuzzer = pytest.mark.skipif(CC is None, reason="no clang with libFuzzer (scripts/setup.sh installs clang-19 "
                                                        "and libclang-rt-19-dev; zig's clang has no libFuzzer)")


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    exe = d / "fuzz_protocol"
    p = subprocess.run([CC, "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
                        "-Dmain=odl_firmware_main", "-DODL_FUZZ", f"-I{ROOT / 'tests/fuzz/include'}",
                        f"-I{ROOT / 'targets/common'}", str(ROOT / "tests/fuzz/fuzz_protocol.c"),
                        str(ROOT / "targets/common/protocol.c"), str(ROOT / "targets/common/byte_io.c"),
                        str(ROOT / "targets/common/crc32.c"),
                        str(ROOT / "targets/common/main.c"), "-o", str(exe)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return exe


def run_fuzzer(exe: Path, seconds: int, workdir: Path) -> int:
    corpus = workdir / "corpus"
    corpus.mkdir(exist_ok=True)
    p = subprocess.run([str(exe), f"-max_total_time={seconds}", "-max_len=9000", "-seed=1", "-print_final_stats=1",
                        str(corpus)], capture_output=True, text=True, cwd=workdir, timeout=seconds + 120)
    assert p.returncode == 0 and "ERROR" not in p.stderr, p.stderr[-4000:]
    m = re.search(r"Done (\d+) runs", p.stderr)
    assert m, p.stderr[-2000:]
    runs = int(m.group(1))
    print(f"libFuzzer: {runs} executions in {seconds} s, corpus {len(list(corpus.iterdir()))} inputs")
    return runs


@needs_libfuzzer
def test_fuzz_device_protocol_short(fuzzer, tmp_path):
    assert run_fuzzer(fuzzer, 5, tmp_path) > 1000


@needs_libfuzzer
@pytest.mark.slow
def test_fuzz_device_protocol_long(fuzzer, tmp_path):
    assert run_fuzzer(fuzzer, 120, tmp_path) > 100000
