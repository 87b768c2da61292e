"""The kernels' argument structs, read from the one place they are declared (kernels_c/include/odl_kernels.h, odl_int8.h). The
tiler asks which fields are pointers and which of those a kernel only reads (`pointer_fields`); the host build
(odl.run.native) gets ctypes Structures with the same layout (`ctypes_struct`). Nothing copies a layout by hand."""
from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from functools import lru_cache

from odl.common.resources import resource_dir

# scalar field types the header uses -> ctypes; every pointer is a c_void_p (the host passes numpy buffers)
HEADERS = ("odl_kernels.h", "odl_int8.h")     # where kernel argument structs are declared
_SCALARS = {"int": ctypes.c_int, "float": ctypes.c_float, "uint32_t": ctypes.c_uint32, "int32_t": ctypes.c_int32}


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str        # the C base type: odl_t, float, int, int32_t, uint32_t, uint8_t
    pointer: bool
    const: bool       # a pointer to const: the kernel only reads it


def _fields(body: str) -> tuple[Field, ...]:
    out = []
    for decl in body.split(";"):
        decl = " ".join(decl.split())
        if not decl:
            continue
        const = decl.startswith("const ")
        decl = decl[6:] if const else decl
        ctype, _, rest = decl.partition(" ")
        for part in rest.split(","):
            part = part.strip()
            out.append(Field(part.lstrip("*").strip(), ctype, part.startswith("*"), const and part.startswith("*")))
    return tuple(out)


@lru_cache(maxsize=None)
def structs() -> dict[str, tuple[Field, ...]]:
    """Every `typedef struct {...} name;` of odl_kernels.h and odl_int8.h, its fields in declaration order."""
    inc = resource_dir("kernels_c") / "include"
    text = "".join((inc / h).read_text() for h in HEADERS)
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return {name: _fields(body) for body, name in re.findall(r"typedef\s+struct\s*\{(.*?)\}\s*(\w+)\s*;", text, re.S)}


def pointer_fields(args_type: str) -> dict[str, bool]:
    """Pointer fields of a kernel argument struct -> True if const (read only)."""
    return {f.name: f.const for f in structs().get(args_type, ()) if f.pointer}


@lru_cache(maxsize=None)
def ctypes_struct(args_type: str) -> type:
    """A ctypes.Structure laid out as the C struct `args_type` on the host."""
    fields = [(f.name, ctypes.c_void_p if f.pointer else _SCALARS[f.ctype]) for f in structs()[args_type]]
    return type(args_type, (ctypes.Structure,), {"_fields_": fields})
