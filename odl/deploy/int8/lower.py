"""The traced graph of a QAT model -> an Int8Program (program.py), computing what the fake-quant model computes in
evaluation (odl/lower/ops/fakequant_torch.py) with integers:

- every activation point (fakequant.points: the input, each Conv / Linear output past its bias, frozen batch norm and
  ReLU / ReLU6, each residual add past its ReLU) is an int8 tensor with the point's scale and zero point;
- a Conv / Linear accumulates weight codes x input codes in int32 (the input's zero point folded into the bias);
  the batch norm and bias that follow it become the per-channel FP32 multiplier and the int32 bias:
  y = a[c] * (s_in * s_w[c] * acc) + b[c] = (a[c] * s_in * s_w[c]) * (acc + b[c] / (a[c] * s_in * s_w[c]));
  the weight codes stay those the fake-quant model uses (batch norm is applied after its conv, not folded into the
  weight before quantization); the ReLU / ReLU6 is the clamp;
- max pooling, flatten and dropout (the identity in evaluation) work on the codes (they commute with the
  quantization); average pooling rounds its mean to
  a code of the input's scale (the fake-quant model keeps the mean unrounded: a note, counted by the agreement test).
Anything else is refused naming the node, its op and shape."""
from __future__ import annotations

import numpy as np
import torch

from odl.common.errors import OdlError
from odl.deploy.int8.program import Int8Program, Ref
from odl.deploy.int8.qat_checkpoint import QatCheckpoint, act_qparams, weight_codes
from odl.lower.ops import fakequant as fqmod

F32 = np.float32
SUPPORTED = ("conv2d", "dwconv2d", "linear", "batchnorm", "bias", "relu", "relu6", "add", "maxpool", "avgpool",
             "view", "flatten", "dropout")
I32_LIMIT = 2 ** 31 - 1
COLS_BYTES = 16384   # a conv's im2col buffer at most (a block of its output rows at a time; one row if it is larger)


def pack_gemm(codes: np.ndarray) -> np.ndarray:
    """odl_i8_gemm's weight layout for N > 1 (odl_int8.h): [M, K] codes in groups of 8 channels, [ceil(M / 8), K, 8],
    the last group's missing rows zero, so that one step of K reads its 8 weights from one place"""
    m, k = codes.shape
    g = (m + 7) // 8
    out = np.zeros((g * 8, k), np.int8)
    out[:m] = codes
    return np.ascontiguousarray(out.reshape(g, 8, k).transpose(0, 2, 1))


def _refuse(n, why: str):
    raise OdlError(f"--deploy int8: {n.describe()}, op {n.op}, shape {list(n.shape)}: {why}")


def _chain(graph, node) -> list:
    """node and the bias / batch norm / ReLU nodes its activation point extends over (fakequant.points' walk)."""
    out, v, op = [node], node.name, node.op
    while True:
        cons = graph.consumers(v)
        if len(cons) != 1 or op not in fqmod.FOLLOWERS.get(cons[0].op, ()) or v == graph.output:
            return out
        out.append(cons[0])
        v, op = cons[0].name, cons[0].op


class _Lowering:
    def __init__(self, graph, model: torch.nn.Module, ck: QatCheckpoint, name: str):
        self.g, self.ck = graph, ck
        self.sd = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
        self.P = Int8Program(name, normalize=ck.normalize)
        self.pts = {v: fqmod.point_of(graph, v) for v in fqmod.points(graph)}
        self.done: set[str] = set()

    def qparams(self, value: str) -> tuple[F32, int]:
        s, z = act_qparams(self.ck, self.pts[value])
        return s, z - 128

    def out_tensor(self, chain) -> tuple:
        """The chain's end (an activation point): its tensor, the FP32 1/scale, clamp bounds (ReLU / ReLU6 folded)."""
        end = chain[-1]
        if end.name not in self.pts:
            _refuse(chain[0], f"its output '{end.name}' is not an activation point of the QAT model")
        s, zp = self.qparams(end.name)
        t = self.P.tensor(end.name, end.shape[1:], s, zp)
        inv = F32(1) / F32(s)
        lo, hi = -128, 127
        if end.op == "relu":
            lo = zp
        elif end.op == "relu6":
            lo, hi = zp, min(127, zp + int(np.rint(F32(6) * inv)))
        return t, inv, lo, hi

    def affine(self, chain, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Per channel a, b with (chain's value before ReLU) = a * (layer's product) + b, in FP64."""
        n0 = chain[0]
        a = np.ones(c)
        b = self.sd[n0.params["bias"]].copy() if n0.params.get("bias") else np.zeros(c)
        for n in chain[1:]:
            if n.op == "bias":
                b = b + self.sd[n.params["bias"]]
            elif n.op == "batchnorm":
                if self.ck.bn != "frozen" or not n.attrs.get("track"):
                    _refuse(n, f"batch norm on batch statistics (the checkpoint was trained with --qat-bn "
                               f"{self.ck.bn}); an int8 deploy folds frozen batch norm only: train with --qat-bn frozen")
                k = (self.sd[n.params["weight"]] if n.params.get("weight") else 1.0) / np.sqrt(
                    self.sd[n.attrs["running_var"]] + n.attrs["eps"])
                beta = self.sd[n.params["bias"]] if n.params.get("bias") else 0.0
                a, b = a * k, b * k + beta - self.sd[n.attrs["running_mean"]] * k
        return a, b

    def requant(self, chain, x, codes: np.ndarray, sw: np.ndarray, fold_zp: bool):
        """(output tensor, int32 bias ref, FP32 multiplier ref, lo, hi) of a Conv / Linear chain."""
        n0, c = chain[0], codes.shape[0]
        t, inv, lo, hi = self.out_tensor(chain)
        a, b = self.affine(chain, c)
        eff = a * float(x.scale) * sw.astype(np.float64)          # the real value of one accumulator unit
        if np.any(eff == 0) or not np.all(np.isfinite(eff)):
            _refuse(n0, f"channel(s) {np.flatnonzero((eff == 0) | ~np.isfinite(eff)).tolist()[:8]} have a zero or "
                        f"non-finite scale (a zero batch-norm weight or weight range): no int8 multiplier")
        bias = np.rint(b / eff)
        flat = codes.reshape(c, -1).astype(np.int64)
        if fold_zp:
            bias = bias - x.zp * flat.sum(1)
        worst = np.abs(flat).sum(1) * 255 + np.abs(bias)
        if np.any(worst > I32_LIMIT):
            _refuse(n0, f"its int32 accumulator could overflow (bound {int(worst.max())})")
        mult = (eff / float(t.scale)).astype(F32)
        return (t, self.P.const(f"{n0.name}_bias", bias.astype(np.int32)),
                self.P.const(f"{n0.name}_mult", mult), lo, hi)

    def layer_input(self, n):
        x = self.P.tensors.get(n.inputs[0])
        if x is None or x.dtype != "i8":
            _refuse(n, f"its input '{n.inputs[0]}' is not a quantized tensor (no activation point before it)")
        return x

    def weights(self, n):
        codes, sw = weight_codes(torch.from_numpy(self.sd[n.params["weight"]]).float())
        return codes, sw

    @staticmethod
    def _gemm_weights(codes: np.ndarray, n: int) -> np.ndarray:
        """row-major for N = 1 (odl_i8_gemm's dot products), packed in groups of 8 channels otherwise"""
        return codes if n == 1 else pack_gemm(codes)

    # -- ops --
    def conv2d(self, n):
        if "dh" in n.attrs or n.attrs.get("groups", 1) != 1:
            _refuse(n, "dilated and grouped (not depthwise) convolutions have no int8 kernel")
        x, chain = self.layer_input(n), _chain(self.g, n)
        codes, sw = self.weights(n)
        t, bias, mult, lo, hi = self.requant(chain, x, codes, sw, fold_zp=True)
        at = n.attrs
        c, h, w = x.shape
        m, ho, wo = t.shape
        k = c * at["kh"] * at["kw"]
        wt = self.P.const(f"{n.name}_w", self._gemm_weights(codes.reshape(m, k), ho * wo))
        gemm = dict(wt=wt, bias=bias, mult=mult, m=m, k=k, ldy=ho * wo, zp=t.zp, lo=lo, hi=hi)
        if (at["kh"], at["kw"], at["sh"], at["sw"], at["pt"], at["pl"]) == (1, 1, 1, 1, 0, 0):
            # a 1x1 conv of stride 1 without padding: x [C, H * W] is its own cols
            self.P.call("odl_i8_gemm", n.name, t.name, [x.name], a=Ref("t", x.name), y=Ref("t", t.name),
                        n=ho * wo, **gemm)
        else:
            # im2col and gemm a block of output rows at a time, cols of at most COLS_BYTES (or one row)
            rows = max(1, min(ho, COLS_BYTES // (k * wo)))
            src = self.P.tensor(f"{n.name}_cols", (k, rows * wo)).name
            for oy0 in range(0, ho, rows):
                nr = min(rows, ho - oy0)
                self.P.call("odl_i8_im2col", n.name, src, [x.name], x=Ref("t", x.name), cols=Ref("t", src), c=c,
                            h=h, w=w, kh=at["kh"], kw=at["kw"], sh=at["sh"], sw=at["sw"], pt=at["pt"] - oy0 * at["sh"],
                            pl=at["pl"], ho=nr, wo=wo, pad=x.zp)
                self.P.call("odl_i8_gemm", n.name, t.name, [src], a=Ref("t", src), y=Ref("t", t.name, oy0 * wo),
                            n=nr * wo, **gemm)
        self.done.update(nd.name for nd in chain)

    def dwconv2d(self, n):
        x, chain = self.layer_input(n), _chain(self.g, n)
        codes, sw = self.weights(n)
        t, bias, mult, lo, hi = self.requant(chain, x, codes, sw, fold_zp=False)
        at, (c, h, w), (_, ho, wo) = n.attrs, x.shape, t.shape
        self.P.call("odl_i8_dwconv", n.name, t.name, [x.name], x=Ref("t", x.name),
                    wt=self.P.const(f"{n.name}_w", codes), y=Ref("t", t.name), bias=bias, mult=mult, c=c, h=h, w=w,
                    kh=at["kh"], kw=at["kw"], sh=at["sh"], sw=at["sw"], pt=at["pt"], pl=at["pl"], ho=ho, wo=wo,
                    zp_in=x.zp, zp=t.zp, lo=lo, hi=hi)
        self.done.update(nd.name for nd in chain)

    def linear(self, n):
        x, chain = self.layer_input(n), _chain(self.g, n)
        if len(x.shape) != 1:
            _refuse(n, f"its input has shape {list(x.shape)} per sample; only flat [features] inputs are built")
        codes, sw = self.weights(n)
        t, bias, mult, lo, hi = self.requant(chain, x, codes, sw, fold_zp=True)
        self.P.call("odl_i8_gemm", n.name, t.name, [x.name],
                    wt=self.P.const(f"{n.name}_w", self._gemm_weights(codes, 1)), a=Ref("t", x.name),
                    y=Ref("t", t.name), bias=bias, mult=mult, m=codes.shape[0], n=1, k=codes.shape[1], ldy=1,
                    zp=t.zp, lo=lo, hi=hi)
        self.done.update(nd.name for nd in chain)

    def add(self, n):
        ta, tb = (self.P.tensors.get(i) for i in n.inputs)
        if ta is None or tb is None or ta.shape != tb.shape:
            _refuse(n, "a residual add needs two quantized tensors of the same shape")
        chain = _chain(self.g, n)
        t, inv, lo, hi = self.out_tensor(chain)
        self.P.call("odl_i8_add", n.name, t.name, [ta.name, tb.name], a=Ref("t", ta.name), b=Ref("t", tb.name),
                    y=Ref("t", t.name), n=int(np.prod(t.shape)), sa=ta.scale, sb=tb.scale, inv=float(inv), za=ta.zp,
                    zb=tb.zp, zp=t.zp, lo=lo, hi=hi)
        self.done.update(nd.name for nd in chain)

    def _pool(self, n, kernel: str, **extra):
        x = self.layer_input(n)
        t = self.P.tensor(n.name, n.shape[1:], x.scale, x.zp)
        at, (c, h, w), (_, ho, wo) = n.attrs, x.shape, t.shape
        self.P.call(kernel, n.name, t.name, [x.name], x=Ref("t", x.name), y=Ref("t", t.name), c=c, h=h, w=w,
                    kh=at["kh"], kw=at["kw"], sh=at["sh"], sw=at["sw"], pt=at["pt"], pl=at["pl"], ho=ho, wo=wo,
                    **extra)

    def maxpool(self, n):
        self._pool(n, "odl_i8_maxpool")

    def avgpool(self, n):
        x = self.layer_input(n)
        self._pool(n, "odl_i8_avgpool", count_include_pad=int(n.attrs.get("count_include_pad", 1)), mult=1.0,
                   zp_in=x.zp, zp=x.zp)
        self.P.notes.append(f"{n.name}: average pooling rounds its mean to a code of its input's scale")

    def view(self, n):
        x = self.layer_input(n)
        self.P.tensor(n.name, n.shape[1:], x.scale, x.zp, alias=x.name)

    flatten = view
    dropout = view        # the identity in evaluation, as in the fake-quant model's eval()

    def run(self) -> Int8Program:
        g, P = self.g, self.P
        dev = [self.pts[v] for v in fqmod.points(g)]
        if dev != self.ck.points:
            raise OdlError(f"--deploy int8 --init {self.ck.path}: the checkpoint's activation points "
                           f"({', '.join(self.ck.points)}) are not this model's ({', '.join(dev)})")
        if g.output not in self.pts:
            raise OdlError(f"--deploy int8: the model's output '{g.output}' is not an activation point")
        shape = g.input_shape[1:]
        s, zp = self.qparams(g.input)
        P.input = P.tensor("input_f32", shape, dtype="f32").name
        P.tensor(g.input, shape, s, zp)
        P.call("odl_i8_quantize", "input", g.input, [P.input], x=Ref("t", P.input), y=Ref("t", g.input),
               n=int(np.prod(shape)), inv=float(F32(1) / F32(s)), zp=zp)
        for n in g.nodes:
            if n.name in self.done:
                continue
            if n.op not in SUPPORTED or n.op in ("batchnorm", "bias", "relu", "relu6"):
                _refuse(n, "no int8 kernel for it here (int8 deploy covers conv2d, dwconv2d, linear with the "
                           "bias / frozen batch norm / ReLU / ReLU6 that follow them, residual add (+ ReLU), "
                           "max / average pooling, flatten, dropout)")
            getattr(self, n.op)(n)
        out = P.tensors[g.output]
        P.output = out.name
        P.call("odl_i8_dequantize", "output", "", [out.name], x=Ref("t", out.name), y=Ref("logits", ""),
               n=int(np.prod(out.shape)), scale=out.scale, zp=out.zp)
        return P


def lower(graph, model: torch.nn.Module, ck: QatCheckpoint, name: str) -> Int8Program:
    if graph.input_shape[0] != 1:
        raise OdlError(f"--deploy int8: the graph must be traced at batch 1 (odl_predict takes one sample), not "
                       f"{graph.input_shape[0]}")
    return _Lowering(graph, model, ck, name).run()
