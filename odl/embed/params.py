"""`odl params`: the embedded library's state between the device and the host.

    odl params flash.img --model M [build flags] --checkpoint out.pt   newest saved state of a flash image
    odl params state.bin --model M [build flags] --checkpoint out.pt   a blob (odl_params_export's bytes)
    odl params ckpt.pt   --model M [build flags] --blob out.bin | --flash out.img

The build flags (--precision, --batch, --optimizer, --momentum, ... and --init for the input normalisation) are
those given to `odl compile`: the library is rebuilt on the host and the blob's model hash must match it. The
checkpoint has odl train's format (model, optimizer, step, odl) and loads strictly into the nn.Module. A checkpoint
turned into a blob starts a fresh training state (optimizer state zero, step 0) with its weights."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from odl.common.errors import OdlError
from odl.embed import blob as blobmod
from odl.embed.library import EmbedLibrary, blob_from_state_dict, build_library, state_dict_from_blob


def _write_atomic(path: str, data: bytes) -> None:
    p = Path(path).resolve()
    if not p.parent.is_dir():
        raise OdlError(f"{path}: directory {p.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_state(lib: EmbedLibrary, path: str) -> tuple[bytes, str]:
    """(blob, description) of a flash image or a blob file."""
    p = Path(path)
    if not p.is_file():
        raise OdlError(f"{path}: no such file")
    data = p.read_bytes()
    if len(data) == blobmod.FLASH_BYTES:
        seq, blob = blobmod.newest_slot_blob(data, lib.blob_bytes, lib.model_hash, path)
        return blob, f"flash image, newest slot (sequence {seq})"
    if data[:4] == b"ODLB":
        return data, "blob"
    raise OdlError(f"{path}: neither a {blobmod.FLASH_BYTES}-byte flash image nor a state blob (it has "
                   f"{len(data)} bytes and no 'ODLB' magic)")


def checkpoint_of(lib: EmbedLibrary, blob: bytes, what: str) -> dict:
    from odl.common.checkpoint import CKPT_VERSION
    from odl.resident import optimizer_state, read_ctl
    sd, head = state_dict_from_blob(lib, blob, what)
    payload = blob[blobmod.HEADER_BYTES:]
    return {"model": sd, "optimizer": optimizer_state(lib.fw, payload, lib.train_opts), "epoch": 0,
            "step": int(head["step"]),
            "odl": {"version": CKPT_VERSION, "model": lib.name, "normalize": lib.normalize,
                    "precision": lib.opts.precision, "ctl": read_ctl(lib.fw, payload),
                    "layout": [list(t) for t in lib.fw.layout()], "model_hash": lib.model_hash,
                    "device": torch.frombuffer(bytearray(payload), dtype=torch.uint8), "source": "odl params"}}


def params(model_spec: str, src: str, eo, checkpoint: str | None = None, blob_out: str | None = None,
           flash_out: str | None = None, log=print) -> dict:
    outs = [o for o in (checkpoint, blob_out, flash_out) if o]
    if len(outs) != 1:
        raise OdlError("give exactly one of --checkpoint OUT.pt, --blob OUT.bin, --flash OUT.img")
    lib = build_library(model_spec, eo, log=lambda *a: None)
    if src.endswith(".pt"):
        if checkpoint:
            raise OdlError(f"{src} is a checkpoint already: --blob or --flash turn it into device state")
        from odl.common.checkpoint import load_checkpoint
        ck = load_checkpoint(src, "input")
        sd = ck["model"] if isinstance(ck, dict) and isinstance(ck.get("model"), dict) else ck
        try:
            blob = blob_from_state_dict(lib, sd)
        except RuntimeError as e:
            raise OdlError(f"{src} is not a checkpoint of model '{lib.name}': {str(e).splitlines()[0][:300]}") from None
        data = blob if blob_out else blobmod.flash_image(blob)
        _write_atomic(blob_out or flash_out, data)
        log(f"odl params: {src} -> {blob_out or flash_out} ({len(blob)}-byte blob, model hash {lib.model_hash:#010x})")
        return {"blob_bytes": len(blob)}
    blob, kind = read_state(lib, src)
    if blob_out or flash_out:
        blobmod.unpack_blob(blob, lib.model_hash, lib.fw.shared_bytes, src)
        _write_atomic(blob_out or flash_out, blob if blob_out else blobmod.flash_image(blob))
        log(f"odl params: {src} ({kind}) -> {blob_out or flash_out}")
        return {"blob_bytes": len(blob)}
    ck = checkpoint_of(lib, blob, src)
    lib.model.load_state_dict(ck["model"], strict=True)       # the promise: it loads strictly
    from odl.common.checkpoint import save_atomic
    save_atomic(ck, checkpoint)
    log(f"odl params: {src} ({kind}, step {ck['step']}) -> {checkpoint}")
    return {"step": ck["step"], "blob_bytes": len(blob)}
