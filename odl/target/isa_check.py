"""Checks that a firmware ELF respects the cost model's 2-lane SIMD: every vector-length setting in .text is a
vsetivli with AVL <= 2, or a `vsetvli zero, zero, ...` that keeps the current length. A vsetvli that takes its
length from a register, or asks for VLMAX, would let one instruction do more than 2 lanes of work."""
from __future__ import annotations

import struct
from pathlib import Path

MAX_LANES = 2


def _text(elf: bytes) -> tuple[bytes, int]:
    if elf[:4] != b"\x7fELF" or elf[4] != 1:
        raise ValueError("not a 32-bit ELF")
    shoff, = struct.unpack_from("<I", elf, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x2E)
    secs = [struct.unpack_from("<IIIIIIIIII", elf, shoff + i * shentsize) for i in range(shnum)]
    strtab = secs[shstrndx]
    for s in secs:
        name_end = elf.index(b"\0", strtab[4] + s[0])
        if elf[strtab[4] + s[0]:name_end] == b".text":
            return elf[s[4]:s[4] + s[5]], s[3]
    raise ValueError("no .text section")


def vector_length_violations(elf_path: Path) -> list[str]:
    code, base = _text(Path(elf_path).read_bytes())
    bad, i = [], 0
    while i + 2 <= len(code):
        lo, = struct.unpack_from("<H", code, i)
        if lo & 3 != 3:          # 16-bit compressed instruction
            i += 2
            continue
        if i + 4 > len(code):
            break
        ins, = struct.unpack_from("<I", code, i)
        if ins & 0x7F == 0x57 and (ins >> 12) & 7 == 7:   # OP-V, OPCFG: vsetvli / vsetivli / vsetvl
            rd, rs1 = (ins >> 7) & 31, (ins >> 15) & 31
            if ins >> 30 == 3:                             # vsetivli: AVL is an immediate
                if rs1 > MAX_LANES:
                    bad.append(f"{base + i:#x}: vsetivli with AVL {rs1}")
            elif ins >> 31 == 0:                           # vsetvli: AVL from a register
                if not (rd == 0 and rs1 == 0):
                    bad.append(f"{base + i:#x}: vsetvli with a register AVL (x{rs1} -> x{rd})")
            else:
                bad.append(f"{base + i:#x}: vsetvl")
        i += 4
    return bad
