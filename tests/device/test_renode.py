"""Renode support: the generated platform and script are checked everywhere; the end-to-end run needs `renode`
on PATH (not installable from Debian/PyPI/npm, so CI skips it with that reason)."""
import shutil
from pathlib import Path

import pytest

from helpers import MODELS
from odl.run.runners.renode import platform_repl, script_resc
from odl.target.description import load_target
from odl.run.device import DeviceOptions


def test_platform_matches_the_qemu_memory_map():
    repl = platform_repl(load_target("rv32-cluster"), 8)
    assert "ram: Memory.MappedMemory @ sysbus 0x80000000" in repl
    # the memory hierarchy's regions (target.json "memory"), as the linker script places them
    assert "l1: Memory.MappedMemory @ sysbus 0x80100000\n    size: 0x20000" in repl
    assert "l2: Memory.MappedMemory @ sysbus 0x80200000" in repl
    assert "UART.NS16550 @ sysbus 0x10000000" in repl
    assert "CoreLevelInterruptor @ sysbus 0x02000000" in repl and "numberOfTargets: 8" in repl
    assert repl.count("CPU.RiscV32 @ sysbus") == 8
    assert repl.count('cpuType: "rv32imafc_zicsr_zfh_zve32f_zvfh"') == 8
    for h in range(8):
        assert f"hartId: {h}\n" in repl and f"-> cpu{h}@[3, 7]" in repl   # software + timer interrupts


def test_script():
    s = script_resc(Path("/w/odl.repl"), Path("/w/fw.elf"), 4567, 2, preload=[(0x80200000, Path("/w/p.bin"))])
    lines = s.splitlines()
    assert lines[:2] == ['mach create "odl"', "machine LoadPlatformDescription @/w/odl.repl"]
    assert "cpu0 VectorRegisterLength 128" in lines and "cpu1 VectorRegisterLength 128" in lines
    assert 'emulation CreateServerSocketTerminal 4567 "uart" false' in lines   # raw socket, no telnet bytes
    assert "connector Connect sysbus.uart0 uart" in lines
    assert lines.index("sysbus LoadELF @/w/fw.elf") < lines.index("sysbus LoadBinary @/w/p.bin 0x80200000")


@pytest.mark.skipif(shutil.which("renode") is None, reason="renode not on PATH (not packaged in Debian/PyPI/npm)")
def test_validate_on_renode():
    from odl.verify.validate import validate
    rep = validate(f"{MODELS / 'spine_model.py'}:SpineNet", precision="fp16", cores=4, input_shape="2x3x7x8",
                   device=DeviceOptions(emulator="renode"), log=lambda s: None)
    assert rep["passed"] and rep["runner"] == "renode"
