"""Per-layer formats without the emulator (odl/lower/layers.py): --store fp8:REGEX packs exactly what the matched
layers' backward reads and their output gradients, --qat int8:REGEX quantizes exactly the matched layers' weights
and points, the kept memory moves between none, part and all, and a bad pattern is refused (exit 2) naming the
model's layers."""
from types import SimpleNamespace

import pytest

from helpers import MODELS
from odl.cli.main import main
from odl.common.errors import OdlError
from odl.frontend.trace import load_model, trace
from odl.lower.fp8 import kept_for_backward
from odl.lower.layers import split_option
from odl.lower.lowering import TrainConfig, lower
from odl.lower.ops import fakequant as fq
from odl.pipeline import prepare
from odl.plan.planner import plan
from odl.target.description import load_target
from odl.tile.memory import memory_for


def _graph(name):
    m = load_model(name)
    return trace(m, tuple(m.input_shape))


def _fp8(graph, layers, memory="flat"):
    prog = lower(graph, "fp16", TrainConfig(store="fp8", store_layers=layers),
                 memory=memory_for(load_target("rv32-cluster"), memory))
    return prog.fp8, prog


@pytest.mark.parametrize("layers, acts, grads, reads", [
    ("c2", {"relu"}, {"convolution_1"}, {"convolution_1": ["relu"], "relu": ["relu"]}),
    ("fc", {"relu_1"}, {"addmm"}, {"addmm": ["view"], "relu_1": ["relu_1"]}),
    ("^c1$", set(), {"convolution"}, {}),          # c1's backward reads the model input only (not stored)
])
def test_store_selects_what_the_matched_layers_read(layers, acts, grads, reads):
    """A value some matched layer's backward reads is stored (every reader then reads the FP8 copy, the ReLU's
    own mask included); the gradient a matched layer's backward starts from is packed."""
    p, prog = _fp8(_graph("tinycnn"), layers)
    assert {e.holder for e in p.acts} == acts and {e.values[0] for e in p.grads} == grads and p.reads == reads
    kinds = [c.kernel for c in prog.calls]
    assert kinds.count("odl_fp8_pack") == len(acts) + len(grads)
    assert kinds.count("odl_fp8_scale") == bool(acts) + bool(grads)


def test_kept_memory_moves_between_none_part_and_all():
    prep = prepare("resnet8", None, 0, "fp16")
    hier = memory_for(load_target("rv32-cluster"), "hierarchy")
    kept = {}
    for store, layers in [("compute", ""), ("fp8", "layer3"), ("fp8", "layer1|layer2|layer3"), ("fp8", "")]:
        prog = lower(prep.graph, "fp16", TrainConfig(store=store, store_layers=layers), memory=hier)
        plan(prog)
        kept[layers or store] = kept_for_backward(prog)
    order = ["compute", "layer3", "layer1|layer2|layer3", "fp8"]
    fp8 = [kept[k]["fp8_bytes"] for k in order]
    total = [kept[k]["bytes"] for k in order]
    assert fp8[0] == 0 and fp8 == sorted(fp8) and len(set(fp8)) == 4
    assert total == sorted(total, reverse=True) and len(set(total)) == 4


def test_qat_selects_weights_and_points():
    g = _graph("resnet8")
    assert fq.weights(g, "layer3") == ["layer3.conv1.weight", "layer3.conv2.weight", "layer3.shortcut.weight"]
    # layer3's outputs: conv1 -> bn -> relu, conv2 -> bn, the shortcut conv, and the residual add (+ ReLU) they
    # feed; not the input (conv1 is the first layer)
    assert fq.points(g, "layer3") == ["relu_5", "getitem_30", "convolution_8", "relu_6"]
    assert fq.points(g, "^conv1$|fc") == ["x", "relu", "relu_2", "addmm"]   # layer1's add: its identity input is
    assert fq.points(g, "") == fq.points(g) and fq.weights(g, "") == fq.weights(g)   # the stem's point


def test_qat_lowering_and_torch_reference_agree():
    from odl.lower.ops.fakequant_torch import TorchFakeQuant
    from odl.train.qat import reference_net
    g = _graph("tinycnn")
    prog = lower(g, "fp32", TrainConfig(qat="int8", qat_layers="c2"))
    kinds = [c.kernel for c in prog.calls]
    assert kinds.count("odl_fq_observe") == 2 and [n.attrs["point"] for n in prog.graph.nodes
                                                     if n.op == "fakequant"] == ["relu_1"]
    assert {k.rsplit(".", 1)[0] for k in prog.state if k.startswith("qat.")} == {"qat.relu_1", "qat.c2.weight"}
    t = TorchFakeQuant(g, "c2")
    assert set(t.act) == {"relu_1"} and set(t.wgt) == {"c2.weight"}
    # odl train's host reference: the model's torch.fx trace with the same pattern, checked against the device's
    cfg = TrainConfig(qat="int8", qat_layers="^c1$|fc")
    net = reference_net(load_model("tinycnn"), SimpleNamespace(cfg=cfg, batch=2), (3, 9, 9), lower(g, "fp32", cfg))
    assert net.point_names == {"input": "input", "relu": "relu", "addmm": "fc"}
    assert set(net.qat.wgt) == {"c1.weight", "fc.weight"}


@pytest.mark.parametrize("cfg, msg", [
    (dict(store="fp8", store_layers="layer9"), r"--store fp8:layer9 matches no layer of the model \(layers: conv1, "
                                               r"bn1, relu, layer1.conv1"),
    (dict(qat="int8", qat_layers="layer9"), "--qat int8:layer9 matches no layer"),
    (dict(qat="int8", qat_layers="^relu"), "have no quantized weight"),
    # conv1 has no backward when only fc trains: nothing of it to store
    (dict(store="fp8", store_layers="^conv1$", train="^fc"), "nothing would be stored in FP8"),
])
def test_bad_patterns_are_refused(cfg, msg):
    with pytest.raises(OdlError, match=msg):
        lower(_graph("resnet8"), "fp16", TrainConfig(**cfg))


@pytest.mark.parametrize("args, msg", [
    (["--store", "fp8:zz"], "--store fp8:zz matches no layer of the model (layers: c1, relu, c2, relu_1, flat, fc)"),
    (["--qat", "int8:zz"], "--qat int8:zz matches no layer"),
    (["--store", "fp8:("], "bad layer regex"),
    (["--store", "compute:c1"], "compute takes no layer pattern"),
    (["--qat", "int8:"], "empty layer pattern"),
])
def test_cli_refuses_with_exit_2(args, msg, capsys, tmp_path):
    assert main(["validate", "tinycnn", "--precision", "fp16", "--keep", str(tmp_path / "k"), *args]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "k").exists() or not any((tmp_path / "k").iterdir())     # nothing was built


def test_split_option():
    assert split_option("--store", "fp8", ("compute", "fp8"), ("fp8",)) == ("fp8", "")
    assert split_option("--store", "fp8:layer1\\..*|conv1", ("compute", "fp8"), ("fp8",)) == ("fp8",
                                                                                              "layer1\\..*|conv1")
    assert TrainConfig(store="fp8", store_layers="c2").store_option == "fp8:c2"
    assert TrainConfig(qat="int8").qat_option == "int8"


def test_commands_without_the_format_refuse_a_pattern_too(capsys, tmp_path):
    assert main(["compile", "tinycnn", "-o", str(tmp_path / "p"), "--store", "fp8:c2"]) == 2
    assert "odl compile does not support FP8 storage" in capsys.readouterr().err
    assert main(["fleet", str(MODELS / "digits_cnn.py") + ":DigitsCNN", "--data", "digits", "--qat", "int8:fc"]) == 2
    assert "odl fleet does not support quantization-aware training" in capsys.readouterr().err


def test_train_resume_key_holds_the_patterns():
    """odl train: a checkpoint's settings name the per-layer choice, so a resumed run with another is refused."""
    from odl.train.loop import TrainOptions
    assert TrainOptions(data="digits", cfg=TrainConfig(store="fp8", store_layers="c2")).resume_key()["store"] == \
        "fp8:c2"
    assert TrainOptions(data="digits", cfg=TrainConfig(qat="int8", qat_layers="fc")).resume_key()["qat"] == "int8:fc"
    assert "store" not in TrainOptions(data="digits", cfg=TrainConfig()).resume_key()
