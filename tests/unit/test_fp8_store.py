"""--store fp8 without the emulator: what the lowering stores in FP8 and where (odl/lower/fp8.py), the memory it
saves, the float8 reference's casts (odl/verify/fp8ref.py) and the refusals that name the flag."""
import dataclasses

import numpy as np
import pytest
import torch

from helpers import MODELS
from odl.common.errors import OdlError
from odl.common.precision import E4M3, E5M2, FP8_AMAX_SLOTS, fp8_cast, fp8_scale
from odl.lower.fp8 import kept_for_backward
from odl.lower.lowering import TrainConfig, lower
from odl.pipeline import prepare
from odl.plan.planner import call_spans, plan
from odl.target.description import load_target
from odl.tile.memory import memory_for


def _lowered(model, store, precision="fp16", memory="hierarchy", **kw):
    prep = prepare(model, None, 0, precision)
    hier = memory_for(load_target("rv32-cluster"), memory)
    prog = lower(prep.graph, precision, TrainConfig(store=store, **kw), memory=hier)
    plan(prog)
    return prep, prog


@pytest.mark.parametrize("memory", ["hierarchy", "flat"])
def test_resnet8_keeps_fp8_only_across_the_boundary(memory):
    """Every tensor alive from the forward into the backward is an FP8 copy or an FP32 batch-norm statistic, at
    about half the bytes --store compute keeps; the arena shrinks."""
    _, base = _lowered("resnet8", "compute", memory=memory)
    _, prog = _lowered("resnet8", "fp8", memory=memory)
    loss_at = next(i for i, c in enumerate(prog.calls) if c.step == "loss")
    spans = call_spans(prog.calls)
    first, last = {}, {}
    for i, c in enumerate(prog.calls):
        for b in c.buffers():
            if b.space == "l2":
                first.setdefault(id(b), (spans[i][0], b))
                last[id(b)] = spans[i][1]
    crossing = [b for k, (lo, b) in first.items() if lo < loss_at < last[k] and not b.persistent]
    assert crossing and {b.dtype for b in crossing} <= {"f8", "f32"}
    k, k0 = kept_for_backward(prog), kept_for_backward(base)
    assert k["bytes"] <= 0.55 * k0["bytes"] and k["fp8_bytes"] == k["bytes"] - k["stats_bytes"]
    assert prog.arena_bytes < base.arena_bytes


def test_what_is_packed_and_unpacked():
    """Each stored activation: one pack in the forward after its producer, unpacks only in the backward; each
    gradient between layers: one E5M2 pack and one unpack; the scales first thing in the step."""
    _, prog = _lowered("tinycnn", "fp8", memory="flat")
    p = prog.fp8
    assert [c.kernel for c in prog.calls[:2]] == ["odl_fp8_scale"] * 2
    assert {e.holder for e in p.acts} == {"relu", "relu_1"}
    assert {e.values[0] for e in p.grads} == {"addmm", "relu_1", "convolution_1", "relu", "convolution"}
    assert p.reads["addmm"] == ["view"] and p.reads["relu"] == ["relu"]
    loss_at = next(i for i, c in enumerate(prog.calls) if c.step == "loss")
    packs = [(i, c) for i, c in enumerate(prog.calls) if c.kernel == "odl_fp8_pack"]
    fwd = [c for i, c in packs if i < loss_at]
    assert len(fwd) == len(p.acts) and all(c.fields["fmt"] == E4M3.code for c in fwd)
    assert sum(c.fields["fmt"] == E5M2.code for _, c in packs) == len(p.grads)
    unpacks = [i for i, c in enumerate(prog.calls) if c.kernel == "odl_fp8_unpack"]
    assert min(unpacks) > loss_at
    st = p.states["e4m3"]
    assert st in prog.preload and st.init == ("fp8", "e4m3") and st.nbytes(2) == len(p.acts) * st.shape[1] * 4


def test_tiles_of_fp8_buffers_move_bytes():
    """Under the memory hierarchy the FP8 buffers' tiles are bytes: a pack's L1 copy of its output is as many bytes
    as elements, and every tile of a pack gets the tensor's scale and amax slots whole."""
    _, prog = _lowered("resnet8", "fp8")
    packs = [c for c in prog.calls if c.kernel == "odl_fp8_pack"]
    assert packs
    states = {id(b) for b in prog.fp8.states.values()}
    for c in packs:
        for t in c.dma_out:
            if t.l2.dtype == "f8":
                assert t.nbytes(2) == t.rows * t.row_elems
        for t in c.dma_in + c.late + c.early + c.dma_out:
            if id(t.l2) in states:      # within one tensor's scale and amax slots (4-byte floats)
                lo = t.l2_elem % prog.fp8.states["e4m3"].shape[1]
                assert t.rows == 1 and lo + t.row_elems <= 1 + FP8_AMAX_SLOTS and t.nbytes(2) == 4 * t.row_elems
    assert any(id(t.l2) in states for c in packs for t in c.dma_in + c.late + c.early)


def test_float8_reference_casts_where_the_device_packs():
    """The torch float8 reference: the backward reads the cast copies, the gradient of a stored value passes through
    the E5M2 cast, the forward values stay exact."""
    from odl.verify.fp8ref import Fp8Reference, initial_state
    from odl.verify.reference import reference_steps
    prep, prog = _lowered("tinycnn", "fp8", memory="flat")
    cfg = TrainConfig(store="fp8")
    prep.fp8_state = initial_state(prog.fp8, prep, cfg, prog.trainable, prog.dropout)
    fp8 = Fp8Reference(prog.fp8, prep.fp8_state, prep.graph)
    plain = reference_steps(prep.model, prep.batches, cfg, prog.trainable, prog.dropout, torch.float16,
                            graph=prep.graph)[0]
    cast = reference_steps(prep.model, prep.batches, cfg, prog.trainable, prog.dropout, torch.float16,
                           graph=prep.graph, fp8=fp8)[0]
    for n in prep.graph.nodes:                                          # the forward is untouched
        assert torch.equal(plain.values[n.name], cast.values[n.name]), n.name
    s = fp8.grad_scale["addmm"]
    assert s == fp8_scale([prep.fp8_state["fp8_state_e5m2"][1]], E5M2)
    # the last layer's weight gradient is dY^T X with both read back from FP8
    x = fp8_cast(cast.values["view"].half(), fp8.act_scale["view"], E4M3).double()
    dy = fp8_cast(cast.value_grads["addmm"].half(), s, E5M2).double()
    want = (dy.T @ x).half().double()
    assert torch.allclose(cast.param_grads["fc.weight"], want, rtol=2e-3, atol=1e-6)
    assert not torch.equal(cast.param_grads["fc.weight"], plain.param_grads["fc.weight"])


def test_refusals_name_the_flag():
    from odl.cli.main import refuse_store, train_config
    from odl.verify.validate import validate
    with pytest.raises(OdlError, match="--store must be one of"):
        _lowered("tinycnn", "fp4")
    with pytest.raises(OdlError, match="--store fp8 does not recompute"):
        _lowered("tinycnn", "fp8", recompute=frozenset({"convolution"}))
    with pytest.raises(OdlError, match=r"--store fp8: node '\w+' \(op sigmoid\)"):
        prep = prepare(f"{MODELS / 'ops_models_act.py'}:ActMLP", "3x17", 0, "fp16")
        lower(prep.graph, "fp16", TrainConfig(store="fp8"))
    with pytest.raises(OdlError, match="--store fp8 validates one step"):
        validate("tinycnn", precision="fp16", steps=2, cfg=TrainConfig(store="fp8"), log=lambda s: None)
    a = type("A", (), dict(store="fp8", precision="mixed", loss="xent", lr=0.01, train="all", bn="train",
                           optimizer="sgd", momentum=0.0, weight_decay=0.0, seed=0, model="tinycnn"))()
    with pytest.raises(OdlError, match="--store fp8: with --precision fp16 or fp32"):
        train_config(a)
    with pytest.raises(OdlError, match="--store fp8: odl compile does not support"):
        refuse_store(a, "compile")


def test_fx_frontend_is_refused_by_the_reference(monkeypatch):
    from odl.verify.fp8ref import Fp8Reference
    from odl.verify.validate import validate
    monkeypatch.setenv("ODL_FRONTEND", "fx")            # refused before anything is built or run
    with pytest.raises(OdlError, match="--store fp8 validates against the torch.export"):
        validate("tinycnn", precision="fp16", cfg=TrainConfig(store="fp8"), log=lambda s: None)
    monkeypatch.delenv("ODL_FRONTEND")
    prep, prog = _lowered("tinycnn", "fp8", memory="flat")
    g = dataclasses.replace(prep.graph) if dataclasses.is_dataclass(prep.graph) else prep.graph
    monkeypatch.setattr(g, "exported", None, raising=False)
    with pytest.raises(OdlError, match="--frontend fx"):
        Fp8Reference(prog.fp8, {}, g)


def test_decisions_on_the_fp8_copy():
    from odl.verify.fp8ref import device_decisions
    y = np.array([0.0, 1e-9, 0.3, 5.9, 6.0], np.float32)
    assert device_decisions("relu", y, 1.0).tolist() == [False, False, True, True, True]
    assert device_decisions("relu6", y, 1.0).tolist() == [False, False, True, False, False]   # 5.9 -> 6 in E4M3
