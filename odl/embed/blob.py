"""The embedded library's state blob and flash store, host side (the device side: targets/common/embed/).

Blob: 32-byte header of little-endian u32 words -- magic "ODLB", format version, model hash, payload bytes, step,
header bytes (32), reserved, CRC32 (zlib) of header bytes [0, 28) followed by the payload -- then the payload: the
arena's shared region (parameters, batch-norm statistics, optimizer state, FP32 masters, control block) as laid out
by odl/resident.py build_programs.

Flash store (odl_store.c): two slots of whole erase blocks, each [slot header 32 B | blob]; slot header: magic
"ODLS", sequence, blob bytes, blob CRC, model hash, 2 reserved words, CRC32 of its first 28 bytes. The newest valid
slot is the state."""
from __future__ import annotations

import json
import struct
import zlib

from odl.common.errors import OdlError

BLOB_MAGIC, BLOB_VERSION, HEADER_BYTES = 0x424C444F, 1, 32
SLOT_MAGIC, SLOT_HEADER = 0x534C444F, 32
FLASH_BYTES, FLASH_BLOCK = 32 << 20, 256 << 10       # QEMU virt pflash bank 1 (targets/rv32-cluster/flash_cfi.c)


def model_hash(model_name: str, precision: str, optimizer: str, layout: list) -> int:
    """CRC32 of what a blob's payload depends on: the model, the precision, the optimizer and the state layout
    (name, offset, bytes of every shared buffer)."""
    key = json.dumps({"model": model_name, "precision": precision, "optimizer": optimizer,
                      "layout": [list(t) for t in layout]}, sort_keys=True)
    return zlib.crc32(key.encode()) & 0xFFFFFFFF


def pack_blob(payload: bytes, mhash: int, step: int) -> bytes:
    head = struct.pack("<7I", BLOB_MAGIC, BLOB_VERSION, mhash, len(payload), step, HEADER_BYTES, 0)
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)) & 0xFFFFFFFF) + payload


def unpack_blob(data: bytes, mhash: int | None, payload_bytes: int | None, what: str = "blob") -> tuple[dict, bytes]:
    """(header fields, payload) of a blob; OdlError naming what is wrong (magic, version, model, size, CRC)."""
    if len(data) < HEADER_BYTES:
        raise OdlError(f"{what}: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte blob header")
    magic, ver, h, n, step, hb, _, crc = struct.unpack_from("<8I", data)
    if magic != BLOB_MAGIC:
        raise OdlError(f"{what}: not an odl state blob (magic {magic:#010x}, expected {BLOB_MAGIC:#010x} 'ODLB')")
    if ver != BLOB_VERSION or hb != HEADER_BYTES:
        raise OdlError(f"{what}: blob format version {ver} (header {hb} bytes); this odl reads version {BLOB_VERSION}")
    if mhash is not None and h != mhash:
        raise OdlError(f"{what}: blob of another model or build (model hash {h:#010x}, this model's is {mhash:#010x}: "
                       f"check --model, --precision, --optimizer, --momentum, --batch)")
    if len(data) != HEADER_BYTES + n or (payload_bytes is not None and n != payload_bytes):
        raise OdlError(f"{what}: {len(data)} bytes with a {n}-byte payload in its header; this model's state is "
                       f"{payload_bytes} bytes")
    payload = data[HEADER_BYTES:]
    if zlib.crc32(payload, zlib.crc32(data[:28])) & 0xFFFFFFFF != crc:
        raise OdlError(f"{what}: CRC32 mismatch (the blob is damaged)")
    return {"version": ver, "model_hash": h, "payload_bytes": n, "step": step}, payload


def slot_bytes(blob_bytes: int, block: int = FLASH_BLOCK) -> int:
    return -(-(SLOT_HEADER + blob_bytes) // block) * block


def newest_slot_blob(image: bytes, blob_bytes: int, mhash: int, what: str) -> tuple[int, bytes]:
    """(sequence, blob) of the newest valid slot of a flash image, as odl_store_load picks it."""
    sb = slot_bytes(blob_bytes)
    found = []
    for s in range(2):
        base = s * sb
        hdr = image[base:base + SLOT_HEADER]
        if len(hdr) < SLOT_HEADER:
            continue
        magic, seq, nbytes, bcrc, h, _, _, crc = struct.unpack("<8I", hdr)
        if magic != SLOT_MAGIC or zlib.crc32(hdr[:28]) & 0xFFFFFFFF != crc or h != mhash or nbytes != blob_bytes:
            continue
        blob = image[base + SLOT_HEADER:base + SLOT_HEADER + nbytes]
        try:
            unpack_blob(blob, mhash, blob_bytes - HEADER_BYTES)
        except OdlError:
            continue
        found.append((seq, blob))
    if not found:
        raise OdlError(f"{what}: no valid saved state of this model in either flash slot")
    return max(found)


def flash_image(blob: bytes, seq: int = 1) -> bytes:
    """An erased 32 MiB flash image with `blob` saved in slot 0 (what odl_store_save writes to an empty store)."""
    img = bytearray(b"\xff" * FLASH_BYTES)
    magic, _, mhash = struct.unpack_from("<3I", blob)
    crc = struct.unpack_from("<I", blob, 28)[0]
    head = struct.pack("<7I", SLOT_MAGIC, seq, len(blob), crc, mhash, 0, 0)
    head += struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF)
    img[:SLOT_HEADER] = head
    img[SLOT_HEADER:SLOT_HEADER + len(blob)] = blob
    return bytes(img)
