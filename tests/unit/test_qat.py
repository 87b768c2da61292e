"""--qat int8 on the host: where the fake quantization goes (the graph pass), what the lowering emits and keeps as
device state, torch's side starting from the same state, and the refusals (exit 2, one line naming the flag/node)."""
import math

import pytest
import torch
import torch.nn as nn

from helpers import MODELS
from odl.common.errors import OdlError
from odl.frontend.trace import load_model, trace
from odl.lower.lowering import TrainConfig, lower
from odl.lower.ops import fakequant as fq

DIGITS = f"{MODELS / 'digits_cnn.py'}:DigitsCNN"


def digits_graph(frontend="export"):
    return trace(load_model(DIGITS), (4, 1, 8, 8), frontend=frontend)


@pytest.mark.parametrize("frontend", ["export", "fx"])
def test_points_after_layer_bn_relu_and_at_the_input(frontend):
    g = digits_graph(frontend)
    pts = fq.points(g)
    ops = [g.node(v).op if v != g.input else "input" for v in pts]
    assert ops == ["input", "relu", "relu", "linear"], pts      # conv-BN-ReLU twice, the last Linear (logits)
    assert fq.weights(g) == ["conv1.weight", "conv2.weight", "fc.weight"]
    q = fq.insert(g)
    assert [n.name for n in q.nodes if n.op == "fakequant"] == [fq.fq_name(v) for v in pts]
    assert q.output == fq.fq_name(g.output) and g.output in g.shapes and q is not g
    for v in pts:            # every consumer of a point reads the quantized value; the original graph is unchanged
        assert [c.op for c in q.consumers(v)] == ["fakequant"]
        assert all(c.op != "fakequant" for c in g.consumers(v))


def test_lowering_emits_observers_and_keeps_their_state():
    p = lower(digits_graph(), "fp32", TrainConfig(qat="int8"))
    kinds = [c.kernel for c in p.calls]
    assert kinds.count("odl_fq_fwd") == 4 + 3 and kinds.count("odl_fq_observe") == 7
    assert kinds.count("odl_fq_bwd") == 3 + 3      # three activation points reach the loss's gradient; 3 weights
    first_conv = kinds.index("odl_mm_nn")
    assert kinds[:9].count("odl_fq_fwd") == 3 and first_conv > 9   # weights are quantized before the forward
    conv = next(c for c in p.calls if c.kernel == "odl_mm_nn")
    assert conv.fields["a"].buf.name == "conv1.weight_fq"           # the layer reads the quantized copy
    names = {f"qat.{pt}.{w}" for pt in ("input", "relu", "relu_1", "addmm", "conv1.weight", "conv2.weight",
                                        "fc.weight") for w in fq.STATE}
    assert names <= set(p.state)
    st = p.state["qat.conv2.weight.min_val"]
    assert st.dtype == "f32" and st.nelem == 32 and st.init == ("fill", math.inf)
    ev = lower(digits_graph(), "fp32", TrainConfig(qat="int8", bn="frozen"), forward_only=True)
    upd = {c.layer: c.fields["update"] for c in ev.calls if c.kernel == "odl_fq_observe"}
    assert upd["relu_fq"] == 0 and upd["conv1.weight"] == 1   # evaluation: activation ranges as they are


def test_torch_side_starts_where_the_device_does():
    from odl.lower.ops.fakequant_torch import TorchFakeQuant
    t = TorchFakeQuant(digits_graph())
    assert set(t.act) == {"input", "relu", "relu_1", "addmm"} and set(t.wgt) == set(fq.weights(digits_graph()))
    st = t.state()
    assert float(st["qat.relu.min_val"]) == math.inf and float(st["qat.relu.max_val"]) == -math.inf
    assert float(st["qat.relu.scale"]) == 1.0 and float(st["qat.relu.zero_point"]) == 0.0
    w = torch.randn(32, 16, 3, 3)
    t.weight("conv2.weight", w)
    s = t.state()["qat.conv2.weight.scale"]
    assert torch.equal(s.float(), w.abs().flatten(1).max(1).values / 127.5)


def test_conv_transpose_refused():
    m = nn.Sequential(nn.ConvTranspose2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 7 * 7, 4))
    g = trace(m, (2, 2, 5, 5))
    with pytest.raises(OdlError, match="ConvTranspose2d"):
        lower(g, "fp32", TrainConfig(qat="int8"))


@pytest.mark.parametrize("args, text", [
    (["--qat-bn", "fold", "--qat", "int8"], "--qat-bn fold"),
    (["--qat-bn", "frozen"], "needs --qat int8"),
    (["--qat", "int8", "--qat-bn", "train", "--bn", "frozen"], "contradict"),
    (["--qat", "int8", "--store", "fp8"], "with --store fp8"),
])
def test_cli_refusals(args, text, capsys):
    from odl.cli.main import main
    code = main(["validate", "tinycnn", *args])
    err = capsys.readouterr().err
    assert code == 2 and text in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("cmd", [["compile", "tinycnn", "-o", "OUT"], ["fleet", "tinycnn", "--data", "digits"]])
def test_commands_without_qat_refuse_it(cmd, tmp_path, capsys):
    from odl.cli.main import main
    cmd = [c.replace("OUT", str(tmp_path / "o")) for c in cmd]
    code = main([*cmd, "--qat", "int8"])
    err = capsys.readouterr().err
    assert code == 2 and "does not support quantization-aware training" in err, err
    assert not (tmp_path / "o").exists()



def test_tiles_read_whole_per_channel_qparams():
    """Under the memory hierarchy a weight's fake quantization is cut into ranges; every range has the whole
    per-channel scale and zero-point vectors in L1 (a tile holding only the first channel's quantizes the others
    with whatever L1 holds beside it)."""
    from odl.target.description import load_target
    from odl.tile.memory import memory_for
    g = digits_graph()
    p = lower(g, "fp32", TrainConfig(qat="int8"), memory=memory_for(load_target("rv32-cluster"), "hierarchy"))
    chans = {w: g.params[w][0] for w in fq.weights(g)}
    seen = set()
    for c in p.calls:
        if c.kernel == "odl_fq_fwd" and c.layer in chans:
            for k in ("scale", "zp"):
                ptr = c.fields[k]
                assert ptr.buf.nelem - ptr.elem >= chans[c.layer], (c.layer, k, ptr.buf.name, ptr.buf.nelem)
            seen.add(c.layer)
    assert seen == set(chans)
