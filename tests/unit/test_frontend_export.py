"""The torch.export frontend (odl/frontend/export.py): the same lowered step as the fx frontend for every earlier
model, code written as timm / torchvision write it, refusals naming every ATen op with the user's file:line, and
block-copy tiles (the QEMU validation of the new elementwise ops: tests/models/test_export_models_qemu.py)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import MODELS
from odl.common.errors import OdlError
from odl.frontend.trace import trace
from odl.frontend.export import trace_export
from odl.ir.program import Ptr
from odl.lower.lowering import TrainConfig, lower
from odl.models import BUILTIN
from odl.common.userfile import import_file


def _calls(graph, precision):
    """The lowered step with buffers named by first use (node names differ between frontends: 'flatten' / 'view')."""
    prog = lower(graph, precision, TrainConfig())
    ids = {}

    def canon(v):
        if isinstance(v, Ptr):
            b = v.buf
            ids.setdefault(id(b), (len(ids), b.nelem, b.role, b.dtype, b.init and b.init[0]))
            return ("ptr", ids[id(b)], v.elem, v.per_sample)
        return v
    return [(c.kernel, c.step, c.loop, sorted((k, canon(v)) for k, v in c.fields.items())) for c in prog.calls]


FILE_MODELS = [("ops_models.py", "ConvBNStack", (3, 3, 7, 7)), ("ops_models.py", "ResidualPool", (4, 3, 13, 13)),
               ("ops_models.py", "MLP", (3, 23)), ("ops_models.py", "DepthwiseSeparable", (2, 2, 9, 11)),
               ("shared_models.py", "SharedTwice", (2, 3, 8, 8)), ("ops_models_act.py", "ActConv", (2, 3, 6, 6)),
               ("ops_models_spatial.py", "ConvFamily1d", (3, 6, 13)), ("ops_models_spatial.py", "KWSConv1d", (2, 10, 49)),
               ("ops_models_spatial.py", "UpsampleFamily", (2, 3, 5, 4)), ("shared_models.py", "TiedModules", (5, 11)),
               ("ops_models_act.py", "ActMLP", (3, 17)), ("ops_models_act.py", "CatSoftmax", (3, 4, 5, 7)),
               ("ops_models_act.py", "BN1dMLP", (3, 5, 11)), ("ops_models.py", "GatherConvs", (2, 3, 21, 19)),
               ("ops_models_spatial.py", "NormFamily", (3, 3, 5, 7))]


@pytest.mark.parametrize("name", ["resnet8", "dscnn", "tinycnn", pytest.param("mobilenetv1_vww", marks=pytest.mark.slow),
                                  pytest.param("ad_autoencoder", marks=pytest.mark.slow)])
def test_builtin_lowering_identical_to_fx(name):
    m = BUILTIN[name]()
    shape = tuple(m.input_shape)
    fx, ex = trace(m, shape, "fx"), trace_export(m, shape)
    assert ex.params == fx.params                     # state_dict names, PyTorch's order
    assert [n.op for n in ex.nodes] == [n.op for n in fx.nodes]
    # layers keep their module paths (the report names)
    assert [n.report_name for n in ex.nodes if n.params] == [n.report_name for n in fx.nodes if n.params]
    assert _calls(ex, "fp16") == _calls(fx, "fp16")


QUICK = {"ConvBNStack", "UpsampleFamily", "NormFamily", "TiedModules", "CatSoftmax"}   # the rest: slow


@pytest.mark.parametrize("file,name,shape", [pytest.param(*m, marks=() if m[1] in QUICK else pytest.mark.slow, id=m[1])
                                             for m in FILE_MODELS])
def test_test_models_lowering_identical_to_fx(file, name, shape):
    m = getattr(import_file(str(MODELS / file), "m"), name)()
    ex, fx = _calls(trace_export(m, shape), "fp32"), _calls(trace(m, shape, "fx"), "fp32")
    if name == "NormFamily":
        # InstanceNorm arrives as views around a per-row normalisation: the same kernels with the same settings,
        # but the views change which buffers the in-place rules may share
        def strip(calls):
            return [(k, s, lp, [(f, v) for f, v in fs if not (isinstance(v, tuple) and v[0] == "ptr")])
                    for k, s, lp, fs in calls]
        ex, fx = strip(ex), strip(fx)
    assert ex == fx


def test_bn_running_stats_and_counters_by_state_dict_name():
    m = import_file(str(MODELS / "ops_models.py"), "m").ConvBNStack()
    g = trace_export(m, (3, 3, 7, 7))
    bns = [n for n in g.nodes if n.op == "batchnorm"]
    assert [n.attrs["running_mean"] for n in bns] == [f"{n.module}.running_mean" for n in bns]
    assert g.counters == [f"{n.module}.num_batches_tracked" for n in bns]
    assert all(n.attrs["momentum"] == 0.1 for n in bns)


class Everyday(nn.Module):
    """The constructs the fx frontend refused: shape checks, x.size(0) / x.shape[0] views, F.linear and
    F.batch_norm with the module's own parameters."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        torch._assert(x.shape[1] == 3, "RGB input")
        x = self.conv(x)
        x = F.batch_norm(x, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias, True, 0.1, 1e-5)
        x = F.relu(x).view(x.shape[0], -1)
        x = x.reshape(x.size(0), -1)
        return F.linear(x, self.fc.weight, self.fc.bias)


def test_everyday_constructs():
    with pytest.raises(OdlError):          # what issue 23 reported
        trace(Everyday(), (2, 3, 6, 6), "fx")
    g = trace_export(Everyday(), (2, 3, 6, 6))
    assert [n.op for n in g.nodes] == ["conv2d", "batchnorm", "relu", "view", "view", "linear"]
    assert g.node(g.output).params == {"weight": "fc.weight", "bias": "fc.bias"}
    assert [n for n in g.nodes if n.op == "batchnorm"][0].params == {"weight": "bn.weight", "bias": "bn.bias"}


def test_refusal_names_every_aten_op_with_file_line():
    m = import_file(str(MODELS / "export_models.py"), "m").Unsupported()
    with pytest.raises(OdlError) as e:
        trace_export(m, (2, 3, 4, 4))
    msg = str(e.value)
    src = (MODELS / "export_models.py").read_text().splitlines()
    line = {k: next(i + 1 for i, s in enumerate(src) if k in s) for k in ("torch.abs", "cumsum", "x * self.scale")}
    assert "3 nodes odl cannot do" in msg
    assert f"aten.abs of [2, 4, 4, 4] -> [2, 4, 4, 4]) at {MODELS / 'export_models.py'}:{line['torch.abs']}" in msg
    assert "aten.cumsum" in msg and f"export_models.py:{line['cumsum']}" in msg
    assert "aten.mul.Tensor" in msg and f"export_models.py:{line['x * self.scale']}" in msg and "'scale'" in msg


def test_cli_frontend_flag(monkeypatch):
    from odl.cli.main import build_parser
    from odl.frontend.trace import default_frontend
    a = build_parser().parse_args(["validate", "resnet8", "--frontend", "fx"])
    assert a.frontend == "fx"
    monkeypatch.delenv("ODL_FRONTEND", raising=False)
    assert default_frontend() == "export"
    monkeypatch.setenv("ODL_FRONTEND", "fx")
    assert default_frontend() == "fx"
    monkeypatch.setenv("ODL_FRONTEND", "nope")
    with pytest.raises(OdlError):
        default_frontend()


@pytest.mark.parametrize("outer,ln,ss,ds,budget", [(6, 40, 100, 40, 1000), (3, 500, 700, 500, 1000), (1, 64, 64, 64, 4096)])
def test_block_copy_tiles_cover_every_element_once(outer, ln, ss, ds, budget):
    """odl_block_copy tiles (cat / slice / split / transpose at sizes beyond one L1 tile): every source element read
    and every destination element written exactly once, rows where the kernel would touch them."""
    from odl.ir.program import Buffer, Call
    from odl.tile.tiler import _block_tiles
    src, dst = Buffer("s", outer * ss), Buffer("d", outer * ds)
    call = Call("odl_block_copy", dict(src=Ptr(src, elem=3), dst=Ptr(dst), outer=outer, len=ln, src_stride=ss,
                                       dst_stride=ds, accumulate=0), "x", "forward")
    seen_s, seen_d = [], []
    tiles = _block_tiles(call, budget, 4, set(), 8)
    for t in tiles:
        for key, seen in (("src", seen_s), ("dst", seen_d)):
            r = t[key]
            assert r.rows * r.row_len * 4 * 2 <= budget or r.rows == 1
            for i in range(r.rows):
                seen += range(r.start + i * r.stride, r.start + i * r.stride + r.row_len)
        assert t["dst"].mode == "w" and t["src"].mode == "r"
    assert sorted(seen_s) == [3 + o * ss + j for o in range(outer) for j in range(ln)]
    assert sorted(seen_d) == [o * ds + j for o in range(outer) for j in range(ln)]
    assert len(tiles) > 1 or budget >= 2 * outer * ln * 4


def test_reference_takes_the_device_pieces_of_hardswish():
    """The validation's aligned reference: hard-swish's derivative from the piece the device's output lies on
    (0 below -3, (2x+3)/6 between, 1 above 3), forward values untouched."""
    import numpy as np
    from odl.verify.reference import reference_steps
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.Hardswish(), nn.Linear(6, 3))
    with torch.no_grad():
        m[0].weight.mul_(8)              # inputs of the hard-swish on all three pieces
    g = trace_export(m, (2, 4))
    hs = next(n for n in g.nodes if n.op == "hardswish")
    x, t = torch.randn(2, 4), torch.tensor([0, 2])

    def ref(masks=None):
        return reference_steps(m, [(x, t)], TrainConfig(), list(g.params), {}, torch.float64, masks=masks,
                               graph=g)[0]
    plain = ref()
    y, xin = plain.values[hs.name].numpy(), plain.values[hs.inputs[0]].numpy()
    region = np.where(y >= 3, 2, np.where(y == 0, 0, 1)).astype(np.int8)
    assert set(region.ravel()) == {0, 1, 2}
    same = ref({hs.name: ("hardswish", region)})
    for k in plain.param_grads:
        assert torch.allclose(same.param_grads[k], plain.param_grads[k])
    i = tuple(np.argwhere(region == 1)[0])
    flipped = region.copy()
    flipped[i] = 2                        # the device saw this element above 3: derivative 1, not (2x+3)/6
    other = ref({hs.name: ("hardswish", flipped)})
    assert torch.equal(other.values[hs.name], plain.values[hs.name])
    dy = plain.value_grads[hs.name].numpy()
    gi_plain, gi_other = plain.value_grads[hs.inputs[0]].numpy(), other.value_grads[hs.inputs[0]].numpy()
    assert np.isclose(gi_plain[i], dy[i] * (2 * xin[i] + 3) / 6) and np.isclose(gi_other[i], dy[i])
    mask = np.ones_like(gi_plain, bool)
    mask[i] = False
    assert np.allclose(gi_plain[mask], gi_other[mask])
