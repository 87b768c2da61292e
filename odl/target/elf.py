"""Symbols of a 32-bit little-endian ELF (the firmware): name -> (address, size), read from its symbol table.
Used by the timing plugin (odl/run/timing_plugin.py) to find the runtime's addresses it watches."""
from __future__ import annotations

import struct
from pathlib import Path

from odl.common.errors import OdlError


def symbols(elf: Path) -> dict[str, tuple[int, int]]:
    data = Path(elf).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise OdlError(f"{elf}: not a 32-bit little-endian ELF file")
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x2E)
    sections = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    out: dict[str, tuple[int, int]] = {}
    for sh in sections:
        if sh[1] != 2:                                   # SHT_SYMTAB
            continue
        strtab = sections[sh[6]]                         # sh_link: its string table
        s_off = strtab[4]
        for k in range(sh[5] // 16):
            name, value, size, _info, _other, _shndx = struct.unpack_from("<IIIBBH", data, sh[4] + 16 * k)
            if name:
                end = data.index(b"\0", s_off + name)
                out.setdefault(data[s_off + name:end].decode(), (value, size))
    if not out:
        raise OdlError(f"{elf}: no symbol table (was it stripped?)")
    return out
