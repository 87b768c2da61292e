"""`odl compile --deploy int8` on the host: the int8 program run with the host build of its kernels (the same C as
the target's) against the host fake-quant model at every activation point, and what the deploy refuses (exit 2,
naming the checkpoint or node, nothing written)."""
import sys

import numpy as np
import pytest
import torch

from helpers import MODELS
from odl.cli.main import main as odl_main
from odl.deploy.int8 import host
from odl.deploy.int8.lower import lower
from odl.deploy.int8.plan import plan
from odl.deploy.int8.qat_checkpoint import fake_quant_model, read
from odl.pipeline import prepare

sys.path.insert(0, str(MODELS))
import qat_checkpoints  # noqa: E402
from digits_cnn import DigitsCNN  # noqa: E402

DIGITS = f"{MODELS / 'digits_cnn.py'}:DigitsCNN"


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("int8") / "qat.pt"
    torch.manual_seed(0)
    xn, _, _ = qat_checkpoints.make(DigitsCNN(), path)
    return path, xn


def program(spec, shape, ck_path):
    prep = prepare(spec, "x".join(map(str, (1, *shape))), 0, "fp32")
    P = lower(prep.graph, prep.model, read(str(ck_path), prep.model, prep.name), prep.name)
    return P, plan(P)


def host_points(model_cls, ck_path, shape, x):
    """every activation point of the host fake-quant model (evaluation, after a warm-up forward), by graph value"""
    m = model_cls()
    net = fake_quant_model(m, read(str(ck_path), m, "m"), shape)
    acts, after = {}, net.qat.after

    def keep(v, out):
        r = after(v, out)
        if r is not None:
            acts[v] = r.detach().numpy().copy()
        return r
    with torch.no_grad():
        net(x)
        net.qat.after = keep
        net(x)
    return acts


def code_flips(P, arena, x, acts, names):
    """per point (device name -> host name): codes that differ between the int8 program and the fake-quant model"""
    out = {}
    runs = [host.run(P, x[i:i + 1].numpy(), arena) for i in range(len(x))]
    for dev, ref in names.items():
        t = P.tensors[dev]
        hq = np.rint(acts[ref] / np.float32(t.scale)).astype(np.int64) + t.zp
        dq = np.stack([r[dev] for r in runs]).astype(np.int64).reshape(hq.shape)
        out[dev] = (int((hq != dq).sum()), int(hq.size), int(np.abs(hq - dq).max()))
    return out, runs


def test_digits_int8_program_agrees_at_every_point(digits_ckpt):
    """128 samples: the int8 program's codes against the fake-quant model's at each point. They differ only where a
    value lies within float rounding of a code boundary (exact int32 sums vs FP32 convolution), by one code."""
    ck, xn = digits_ckpt
    P, arena = program(DIGITS, (1, 8, 8), ck)
    x = xn[:128]
    acts = host_points(DigitsCNN, ck, (1, 8, 8), x)
    flips, runs = code_flips(P, arena, x, acts, {"x": "x", "relu": "relu", "relu_1": "relu_1", "addmm": "fc"})
    print("code flips (differ, of, max):", flips)
    assert flips["x"][0] == 0                                    # the input's quantization is torch's, exactly
    assert all(m <= 1 for _, _, m in flips.values())
    assert sum(f for f, _, _ in flips.values()) <= sum(n for _, n, _ in flips.values()) // 200
    logits = np.stack([r["logits"] for r in runs])
    assert (logits.argmax(1) != acts["fc"].argmax(1)).sum() <= 2


def test_plan_never_overlaps_live_tensors(digits_ckpt):
    P, arena = program(DIGITS, (1, 8, 8), digits_ckpt[0])
    assert arena < sum(t.nbytes for t in P.tensors.values() if not t.alias)     # buffers are reused
    assert P.tensors["x"].offset >= 0 and P.tensors["view"].offset == P.tensors["getitem_12"].offset


def test_placement_in_l1_with_staged_constants_or_in_l2(digits_ckpt, tmp_path):
    """odl/deploy/int8/plan.py place: each node's constants at aligned offsets of one staging buffer (the largest
    node's), staged before the node's first call; the generated C stages them by DMA and points the calls at the
    copies (L1), or, when arena + buffer are over L1's budget, leaves the arena in L2 and the calls on the constants"""
    from odl.deploy.int8.plan import place
    from odl.deploy.int8.project import render
    P, arena = program(DIGITS, (1, 8, 8), digits_ckpt[0])
    ctx = dict(version="t", model=P.model, cores=8, checkpoint="qat.pt")
    first = {c.node: i for i, c in reversed(list(enumerate(P.calls)))}
    with_consts = {c.node for c in P.calls if any(getattr(v, "kind", "") == "c" for v in c.args.values())}
    where = place(P, arena, 1 << 20)
    assert where.l1 and set(where.before) == {first[n] for n in with_consts} and len(with_consts) >= 3
    for names in where.before.values():
        ends = [where.offsets[n] + P.consts[n].nbytes for n in names]
        assert all(where.offsets[n] % 4 == 0 for n in names) and max(ends) <= where.stage_bytes
        assert all(a <= where.offsets[b] for a, b in zip(ends, names[1:]))          # no two of a node overlap
    (tmp_path / "l1").mkdir()
    render(P, arena, where, ctx, tmp_path / "l1")
    src = (tmp_path / "l1" / "odl_model.c").read_text()
    assert src.count("odl_dma_start(") == sum(map(len, where.before.values())) and '".odl_l1"' in src
    small = place(P, arena, arena + where.stage_bytes - 1)
    assert not small.l1 and small.stage_bytes == 0 and not small.offsets
    (tmp_path / "l2").mkdir()
    render(P, arena, small, ctx, tmp_path / "l2")
    src = (tmp_path / "l2" / "odl_model.c").read_text()
    assert "odl_dma_start(" not in src and '".odl_arena"' in src and "odl_i8_stage" not in src


def _compile(*args):
    return odl_main(["compile", *args])


def test_refusals(digits_ckpt, tmp_path, capsys):
    ck, _ = digits_ckpt
    out = tmp_path / "proj"
    raw = torch.load(ck, weights_only=True)
    del raw["odl"]["qat"]
    torch.save(raw, tmp_path / "noqat.pt")
    raw = torch.load(ck, weights_only=True)
    raw["odl"]["qat"]["bn"] = "train"
    torch.save(raw, tmp_path / "bntrain.pt")
    cases = [([], "needs --init"), (["--init", str(tmp_path / "noqat.pt")], "no odl.qat entry"),
             (["--init", str(tmp_path / "bntrain.pt")], "graph node 'getitem'"),
             (["--init", str(ck), "--precision", "fp16"], "do not apply")]
    for extra, msg in cases:
        assert _compile(DIGITS, "-o", str(out), "--deploy", "int8", *extra) == 2
        assert msg in capsys.readouterr().err
        assert not out.exists() and not list(tmp_path.glob(".proj*"))


SIGMOID_MODEL = '''import torch.nn as nn
class SigmoidNet(nn.Module):
    input_shape = (4, 1, 8, 8)
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 10)
    def forward(self, x):
        return self.fc(self.conv(x).sigmoid().flatten(1))
'''


def test_refuses_an_op_without_int8_kernel(tmp_path, capsys):
    (tmp_path / "sig.py").write_text(SIGMOID_MODEL)
    sys.path.insert(0, str(tmp_path))
    try:
        import sig
        qat_checkpoints.make(sig.SigmoidNet(), tmp_path / "s.pt", float_steps=2, qat_steps=2)
    finally:
        sys.path.remove(str(tmp_path))
    assert _compile(f"{tmp_path / 'sig.py'}:SigmoidNet", "-o", str(tmp_path / "p"), "--deploy", "int8", "--init",
                    str(tmp_path / "s.pt")) == 2
    err = capsys.readouterr().err
    assert "op sigmoid" in err and "shape [1, 4, 6, 6]" in err and not (tmp_path / "p").exists()


def isolated_flips(P, arena, acts, names, i):
    """node -> (codes that differ, codes, largest difference) of each residual add, conv (im2col + gemm, or a 1x1 gemm)
    and depthwise conv run alone on the fake-quant model's own input codes of sample i (the linear after average
    pooling reads the rounded mean, not a point: left out)"""
    def codes(v):
        t = P.tensors[v]
        return (np.rint(acts[names[v]][i] / np.float32(t.scale)) + t.zp).astype(np.int64).reshape(t.shape)
    out = {}
    for c in P.calls:
        first = next(d for d in P.calls if d.node == c.node)
        if c.writes not in names or c.kernel not in ("odl_i8_add", "odl_i8_gemm", "odl_i8_dwconv") or \
                any(r not in names for r in first.reads):
            continue
        got = host.run_node(P, c.node, {r: codes(r) for r in first.reads}, arena)
        want = codes(c.writes)
        out[c.node] = (c.kernel, int((got != want).sum()), int(want.size), int(np.abs(got - want).max()))
    return out


def points_by_graph_order(spec, shape, acts):
    from odl.lower.ops import fakequant as fq
    return dict(zip(fq.points(prepare(spec, "x".join(map(str, (1, *shape))), 0, "fp32").graph), acts))


def test_resnet8_residual_adds_are_exact_and_layers_flip_rarely(tmp_path):
    """ResNet8 (QAT a few steps on random data): given the fake-quant model's own input codes, each residual add (+ ReLU)
    gives its codes exactly (torch's arithmetic, FP32) and each conv (+ batch norm, ReLU) flips at most 0.2 % of
    them by one code (measured: 1 to 13, at most 0.13 %); through the whole network the flips propagate (a flipped
    code moves every output reading it): the logits' argmax agrees on 7 of 8 samples at least."""
    from odl.frontend.trace import load_model
    torch.manual_seed(0)
    ck = tmp_path / "r8.pt"
    xn, _, _ = qat_checkpoints.make(load_model("resnet8"), ck, float_steps=10, qat_steps=5, batch=16,
                                    data=qat_checkpoints.random_data((3, 32, 32)))
    P, arena = program("resnet8", (3, 32, 32), ck)
    x = xn[:8]
    acts = host_points(lambda: load_model("resnet8"), ck, (3, 32, 32), x)
    names = points_by_graph_order("resnet8", (3, 32, 32), acts)
    assert len(names) == len(acts) == 14
    for i in range(2):
        iso = isolated_flips(P, arena, acts, names, i)
        assert sorted(k for k, *_ in iso.values()).count("odl_i8_add") == 3 and len(iso) == 12
        for node, (kernel, flips, size, worst) in iso.items():
            assert flips == 0 if kernel == "odl_i8_add" else flips <= size // 500, (node, flips)
            assert worst <= 1
    logits = np.stack([host.run(P, x[i:i + 1].numpy(), arena)["logits"] for i in range(len(x))])
    assert (logits.argmax(1) == acts["fc"].argmax(1)).sum() >= 7
    assert P.notes == ["mean: average pooling rounds its mean to a code of its input's scale"]


def test_dscnn_depthwise_pointwise_dropout(tmp_path):
    """DS-CNN (QAT a few steps on random data): depthwise convs, 1x1 convs read their input as it is (no im2col),
    dropout is the identity; each layer alone flips at most 0.2 % of its codes by one code."""
    from odl.frontend.trace import load_model
    torch.manual_seed(0)
    ck, shape = tmp_path / "ds.pt", (1, 49, 10)
    xn, _, _ = qat_checkpoints.make(load_model("dscnn"), ck, float_steps=5, qat_steps=3, batch=8,
                                    data=qat_checkpoints.random_data(shape, classes=12))
    P, arena = program("dscnn", shape, ck)
    kernels = [c.kernel for c in P.calls]
    assert kernels.count("odl_i8_im2col") == 1 and kernels.count("odl_i8_dwconv") == 4
    acts = host_points(lambda: load_model("dscnn"), ck, shape, xn[:2])
    iso = isolated_flips(P, arena, acts, points_by_graph_order("dscnn", shape, acts), 0)
    assert len(iso) == 8          # the first depthwise conv reads the dropout's view of its point: not isolated
    assert all(flips <= size // 500 and worst <= 1 for _, flips, size, worst in iso.values()), iso
