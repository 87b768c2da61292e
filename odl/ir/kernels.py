"""Registry of the C kernels: what each computes (op, direction), which precisions and layouts it serves, what it
requires of its shapes, and a cost hint (instructions on the busiest core). Lowering asks this registry for
kernels by (op, direction) and picks the cheapest applicable one; codegen takes the argument struct from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from odl.common.errors import OdlError


@dataclass(frozen=True)
class Kernel:
    name: str                       # C function (a task for odl_parallel)
    args_type: str                  # its argument struct in kernels_c/include/odl_kernels.h
    op: str                         # what it computes: 'matmul', 'im2col', 'bn', ...
    direction: str                  # 'forward', 'weight_grad', 'input_grad', 'transform', 'loss', 'update'
    layout: str = "NCHW"            # operand layout / form ('nn', 'nt', 'tn' for matmuls)
    precisions: tuple = ("fp32", "fp16")
    source: str = ""                # kernels_c/<source>
    applies: Callable[[dict], bool] = field(default=lambda f: True, compare=False)
    cost: Callable[[dict, int, int], float] = field(default=lambda f, cores, lanes: 0.0, compare=False)


def _ceil(a, b):
    return -(-a // b)


# nt: instructions per (2-lane FP16 | scalar FP32) multiply-accumulate instruction in its inner loop, from the
# disassembly (4x4 dot products, 35 per 16 FMAs)
_NT_IPF = {2: 35 / 16, 1: 34 / 16}
_MM_TILE = {2: (7, 4), 1: (4, 4)}   # nn / tn register tile (rows, vectors): MM_R x MM_V in matmul.c


def _mm_block_est(rows, cols, k, pm, tstore, acc, lanes):
    """Instructions of one core's rows x cols block of an nn (pm) / tn matmul: mm_block_est in matmul.c, term for
    term (the kernel plans its core grid with it; QEMU calibration within 3%)."""
    r0, v0 = _MM_TILE[lanes]
    cv, odd = divmod(cols, lanes)
    rem = rows % r0
    rt1 = rows // r0 + (rem > 0)
    rtc = (rows // r0) * ((r0 + 1) // 4 + 1) + (rem > 0) * ((rem + 1) // 4 + 1) if pm else 2 * rt1
    ct1 = cv // v0 + (cv % v0 > 0)
    perk = rows * cv + rows * ct1 + (2 if lanes == 2 else 1) * rt1 * cv + rtc * ct1
    t = perk * k + rows * cv * (7 + 9 * acc if tstore else 3 + 2 * acc) + 15 * rt1 * ct1
    if odd:
        t += (2 * rt1 + 5 * rows) * k if pm else (3 * rt1 + 2 * rows + 5 * (rows & 1)) * k + 8 * rows
    return t


def _mm_plan(m, n, k, pm, tstore, acc, cores, lanes):
    """(estimate of the busiest core, pr) of the cheapest pr x (cores / pr) grid, ties to more row blocks: mm_plan
    in matmul.c."""
    nu = _ceil(n, lanes)
    best = None
    for pr in range(1, cores + 1):
        if cores % pr == 0:
            e = _mm_block_est(_ceil(m, pr), min(_ceil(nu, cores // pr) * lanes, n), k, pm, tstore, acc, lanes)
            if best is None or e <= best[0]:
                best = (e, pr)
    return best


def _mm_plan_est(m, n, k, pm, tstore, acc, cores, lanes):
    """The busiest core's estimate under the cheapest grid: mm_plan in matmul.c."""
    return _mm_plan(m, n, k, pm, tstore, acc, cores, lanes)[0]


def mm_plan_field(kernel: str, f: dict, cores: int, lanes: int) -> int:
    """The `plan` argument of an odl_mm_nn / odl_mm_tn call: the core grid (and, tn, orientation) the kernel's
    mm_plan_slot would search for at run time, planned ahead so that no core spends ~800 instructions per
    orientation on it whenever the shape changes. pr | swap << 8 | cores << 16; the kernel searches anyway when it
    runs on another number of cores."""
    m, n, k = f["m"], f["n"], f["k"]
    v = f.get("accumulate", 0)
    acc = v if isinstance(v, int) else 1          # a runtime flag: plan for accumulating (any grid is correct)
    ct, ld = f.get("ct", 0), f.get("ldc", 0)
    ldc, cjs = (1, ld or m) if ct else (ld or n, 1)
    if kernel == "odl_mm_nn":
        pr, sw = _mm_plan(m, n, k, 1, int(cjs != 1), acc, cores, lanes)[1], 0
    else:
        e, pr = _mm_plan(m, n, k, 0, int(cjs != 1), acc, cores, lanes)
        es, spr = _mm_plan(n, m, k, 0, int(ldc != 1), acc, cores, lanes)
        sw = int(es < e)
        pr = spr if sw else pr
    return pr | sw << 8 | cores << 16


def plan_matmuls(calls: list, cores: int, lanes: int) -> None:
    """Sets the `plan` argument of every nn / tn matmul call (mm_plan_field)."""
    for c in calls:
        if c.kernel in ("odl_mm_nn", "odl_mm_tn"):
            c.fields = dict(c.fields, plan=mm_plan_field(c.kernel, c.fields, cores, lanes))


def _mm_cost(form):
    def cost(f, cores, lanes):
        m, n, k = f["m"], f["n"], f["k"]
        v = f.get("accumulate", 0)
        acc = 0 if isinstance(v, int) and v == 0 else 1   # a runtime flag (a C expression) may accumulate
        ct = 1 if f.get("ct", 0) else 0
        if form == "nt":
            rows = _ceil(m, cores) if m >= cores else m
            cols = n if m >= cores else _ceil(n, cores)
            return rows * _ceil(cols, lanes) * k * _NT_IPF[lanes] + rows * cols * 3
        if form == "nn":
            return _mm_plan_est(m, n, k, 1, ct, acc, cores, lanes)
        # tn: the kernel also weighs C^T = B^T A (vectors along M, C stored the other way) and takes the cheaper
        return min(_mm_plan_est(m, n, k, 0, ct, acc, cores, lanes), _mm_plan_est(n, m, k, 0, 1 - ct, acc, cores, lanes))
    return cost


def _elem_cost(per):
    return lambda f, cores, lanes: _ceil(f.get("len", 0), cores * lanes) * per


REGISTRY: dict[str, Kernel] = {}


def _k(**kw):
    k = Kernel(**kw)
    REGISTRY[k.name] = k


_MM = "odl_mm_args_t"
_k(name="odl_mm_nn", args_type=_MM, op="matmul", direction="any", layout="nn", source="matmul.c",
   cost=_mm_cost("nn"))
_k(name="odl_mm_nt", args_type=_MM, op="matmul", direction="any", layout="nt", source="matmul.c",
   cost=_mm_cost("nt"))      # its bias is per column (a linear layer's), not per row
_k(name="odl_mm_tn", args_type=_MM, op="matmul", direction="any", layout="tn", source="matmul.c",
   cost=_mm_cost("tn"))
# im2col / col2im: instructions per col element on the busiest core, ResNet8 FP16 8-hart averages from
# `odl profile` (stride-1 chunks ~2.8 / ~3.1, stride-2 6-10)
_k(name="odl_im2col", args_type="odl_im2col_args_t", op="im2col", direction="transform", source="conv_transform.c",
   cost=lambda f, c, l: _ceil(f["c"] * f["kh"] * f["kw"] * f["ho"] * f["wo"], c) * 4)
_k(name="odl_col2im", args_type="odl_col2im_args_t", op="col2im", direction="transform", source="conv_transform.c",
   cost=lambda f, c, l: _ceil(f["c"] * f["kh"] * f["kw"] * f["ho"] * f["wo"], c) * 5)
_k(name="odl_transpose", args_type="odl_transpose_args_t", op="transpose", direction="transform",
   source="conv_transform.c", cost=lambda f, c, l: _ceil(f["cols"], c) * (f["rows"] * 2 + 6))
_k(name="odl_conv_wflip", args_type="odl_conv_wflip_args_t", op="conv_wflip", direction="transform",
   source="conv_transform.c", cost=lambda f, c, l: _ceil(f["cout"] * f["cin"], c) * (f["kk"] * 3 + 12))
_k(name="odl_bias_add", args_type="odl_bias_add_args_t", op="bias_add", direction="forward", source="elementwise.c")
_k(name="odl_bias_grad", args_type="odl_bias_grad_args_t", op="bias_grad", direction="weight_grad",
   source="elementwise.c")
_k(name="odl_relu_fwd", args_type="odl_relu_args_t", op="relu", direction="forward", source="elementwise.c",
   cost=_elem_cost(4))
_k(name="odl_relu_bwd", args_type="odl_relu_bwd_args_t", op="relu", direction="input_grad", source="elementwise.c",
   cost=_elem_cost(7))
_k(name="odl_relu6_fwd", args_type="odl_relu_args_t", op="relu6", direction="forward", cost=_elem_cost(5))
_k(name="odl_relu6_bwd", args_type="odl_relu_bwd_args_t", op="relu6", direction="input_grad", cost=_elem_cost(8))
_k(name="odl_softmax_xent", args_type="odl_softmax_xent_args_t", op="softmax_xent", direction="loss",
   source="softmax_xent.c")
_k(name="odl_mse", args_type="odl_mse_args_t", op="mse", direction="loss")
_k(name="odl_sgd", args_type="odl_sgd_args_t", op="sgd", direction="update", source="elementwise.c")
_k(name="odl_sgd_momentum", args_type="odl_sgd_momentum_args_t", op="sgd_momentum", direction="update")
_k(name="odl_adam", args_type="odl_adam_args_t", op="adam", direction="update")
_k(name="odl_fill", args_type="odl_fill_args_t", op="fill", direction="transform", source="elementwise.c")
_k(name="odl_bn_fwd", args_type="odl_bn_fwd_args_t", op="batchnorm", direction="forward")
_k(name="odl_bn_bwd", args_type="odl_bn_bwd_args_t", op="batchnorm", direction="input_grad")
_k(name="odl_add", args_type="odl_add_args_t", op="add", direction="forward")
_k(name="odl_copy", args_type="odl_copy_args_t", op="copy", direction="input_grad")
_k(name="odl_maxpool_fwd", args_type="odl_maxpool_fwd_args_t", op="maxpool", direction="forward")
_k(name="odl_maxpool_bwd", args_type="odl_maxpool_bwd_args_t", op="maxpool", direction="input_grad")
_k(name="odl_avgpool_fwd", args_type="odl_avgpool_fwd_args_t", op="avgpool", direction="forward")
_k(name="odl_avgpool_bwd", args_type="odl_avgpool_bwd_args_t", op="avgpool", direction="input_grad")
_k(name="odl_dropout_fwd", args_type="odl_dropout_fwd_args_t", op="dropout", direction="forward")
_k(name="odl_dropout_bwd", args_type="odl_dropout_bwd_args_t", op="dropout", direction="input_grad")
_k(name="odl_dwconv_fwd", args_type="odl_dwconv_fwd_args_t", op="dwconv2d", direction="forward")
_k(name="odl_dwconv_wgrad", args_type="odl_dwconv_wgrad_args_t", op="dwconv2d", direction="weight_grad")
_k(name="odl_dwconv_igrad", args_type="odl_dwconv_igrad_args_t", op="dwconv2d", direction="input_grad")

# spatial and normalisation ops
_k(name="odl_adaptive_avgpool_fwd", args_type="odl_adaptive_avgpool_fwd_args_t", op="adaptive_avgpool",
   direction="forward", source="pool_adaptive.c")
_k(name="odl_adaptive_avgpool_bwd", args_type="odl_adaptive_avgpool_bwd_args_t", op="adaptive_avgpool",
   direction="input_grad", source="pool_adaptive.c")
_k(name="odl_norm_stats", args_type="odl_norm_fwd_args_t", op="norm", direction="forward", source="norm.c")
_k(name="odl_norm_fwd", args_type="odl_norm_fwd_args_t", op="norm", direction="forward", source="norm.c")
_k(name="odl_norm_bwd_stats", args_type="odl_norm_bwd_args_t", op="norm", direction="input_grad", source="norm.c")
_k(name="odl_norm_bwd", args_type="odl_norm_bwd_args_t", op="norm", direction="input_grad", source="norm.c")
_k(name="odl_norm_wgrad", args_type="odl_norm_bwd_args_t", op="norm", direction="weight_grad", source="norm.c")
_k(name="odl_im2col_dilated", args_type="odl_im2col_args_t", op="im2col", direction="transform",
   source="conv_transform.c", cost=lambda f, c, l: _ceil(f["c"] * f["kh"] * f["kw"] * f["ho"] * f["wo"], c) * 6)
_k(name="odl_col2im_dilated", args_type="odl_col2im_args_t", op="col2im", direction="transform",
   source="conv_transform.c", cost=lambda f, c, l: _ceil(f["c"] * f["kh"] * f["kw"] * f["ho"] * f["wo"], c) * 8)
_k(name="odl_upsample_fwd", args_type="odl_upsample_args_t", op="upsample", direction="forward",
   source="upsample.c")
_k(name="odl_upsample_bwd", args_type="odl_upsample_bwd_args_t", op="upsample", direction="input_grad",
   source="upsample.c")
# activations, reductions, concatenation, softmax, NLL / BCE losses (activation.c, reduce.c); an activation costs
# ~10-40 scalar FP32 instructions per element (exp / erfc)
_k(name="odl_act_fwd", args_type="odl_act_args_t", op="activation", direction="forward", source="activation.c",
   cost=lambda f, c, l: _ceil(f.get("len", 0), c) * 30)
_k(name="odl_act_bwd", args_type="odl_act_bwd_args_t", op="activation", direction="input_grad",
   source="activation.c", cost=lambda f, c, l: _ceil(f.get("len", 0), c) * 35)
_k(name="odl_sum_fwd", args_type="odl_sum_args_t", op="sum", direction="forward", source="reduce.c")
_k(name="odl_sum_bwd", args_type="odl_sum_bwd_args_t", op="sum", direction="input_grad", source="reduce.c")
_k(name="odl_block_copy", args_type="odl_block_copy_args_t", op="block_copy", direction="any", source="reduce.c")
_k(name="odl_softmax_fwd", args_type="odl_softmax_args_t", op="softmax", direction="forward", source="reduce.c")
_k(name="odl_softmax_bwd", args_type="odl_softmax_bwd_args_t", op="softmax", direction="input_grad",
   source="reduce.c")
_k(name="odl_nll", args_type="odl_nll_args_t", op="nll", direction="loss", source="reduce.c")
_k(name="odl_bce_logits", args_type="odl_bce_logits_args_t", op="bce_logits", direction="loss", source="reduce.c")
_k(name="odl_sum_partials", args_type="odl_sum_partials_args_t", op="sum_partials", direction="loss",
   source="reduce.c")
# elementwise ops of the torch.export frontend (broadcast.c): scalar affine, clamp, broadcast multiply
_k(name="odl_affine_fwd", args_type="odl_affine_args_t", op="affine", direction="forward", source="broadcast.c",
   cost=_elem_cost(6))
_k(name="odl_affine_bwd", args_type="odl_affine_bwd_args_t", op="affine", direction="input_grad",
   source="broadcast.c", cost=_elem_cost(7))
_k(name="odl_clamp_fwd", args_type="odl_clamp_args_t", op="clamp", direction="forward", source="broadcast.c",
   cost=_elem_cost(9))
_k(name="odl_clamp_bwd", args_type="odl_clamp_bwd_args_t", op="clamp", direction="input_grad", source="broadcast.c",
   cost=_elem_cost(12))
_k(name="odl_rowmul_fwd", args_type="odl_rowmul_args_t", op="rowmul", direction="forward", source="broadcast.c",
   cost=lambda f, c, l: _ceil(f["c"] * f["hw"], c) * 10)
_k(name="odl_rowmul_dx", args_type="odl_rowmul_dx_args_t", op="rowmul", direction="input_grad",
   source="broadcast.c", cost=lambda f, c, l: _ceil(f["c"] * f["hw"], c) * 12)
_k(name="odl_rowmul_dg", args_type="odl_rowmul_dg_args_t", op="rowmul", direction="weight_grad",
   source="broadcast.c", cost=lambda f, c, l: _ceil(f["c"], c) * (f["hw"] * 6 + 8))
# mixed precision (odl train --precision mixed): FP16 programs with FP32 master weights
_k(name="odl_scale", args_type="odl_scale_args_t", op="scale", direction="loss", source="mixed.c",
   precisions=("fp16",), cost=_elem_cost(4))
_k(name="odl_grad_check", args_type="odl_grad_check_args_t", op="grad_check", direction="update", source="mixed.c",
   precisions=("fp16",), cost=_elem_cost(4))
_k(name="odl_sgd_mixed", args_type="odl_sgd_mixed_args_t", op="sgd_mixed", direction="update", source="mixed.c",
   precisions=("fp16",), cost=_elem_cost(10))
_k(name="odl_adam_mixed", args_type="odl_adam_mixed_args_t", op="adam_mixed", direction="update",
   source="mixed.c", precisions=("fp16",), cost=_elem_cost(30))

# FP8 storage (--store fp8, fp8.c): pack into E4M3 / E5M2 with a per-tensor scale, unpack, the scales of a step
_k(name="odl_fp8_pack", args_type="odl_fp8_pack_args_t", op="fp8_pack", direction="any", source="fp8.c",
   cost=_elem_cost(40))
_k(name="odl_fp8_unpack", args_type="odl_fp8_unpack_args_t", op="fp8_unpack", direction="any", source="fp8.c",
   cost=_elem_cost(20))
_k(name="odl_fp8_scale", args_type="odl_fp8_scale_args_t", op="fp8_scale", direction="any", source="fp8.c",
   cost=lambda f, c, l: f["count"] * (f["hist"] * 8 + 40))

# fake quantization (--qat int8, fakequant.c): observer min/max partials, observer step + qparams, forward + mask, STE
FQ_PART = 8     # cores one channel's partial min / max hold room for (ODL_FQ_PART in odl_kernels.h)
_k(name="odl_fq_minmax", args_type="odl_fq_minmax_args_t", op="fq_minmax", direction="forward",
   source="fakequant.c", cost=lambda f, c, l: f["c"] * (_ceil(f["inner"], c) * 4 + 6))
_k(name="odl_fq_observe", args_type="odl_fq_observe_args_t", op="fq_observe", direction="forward",
   source="fakequant.c", cost=lambda f, c, l: _ceil(f["c"], c) * 60)
_k(name="odl_fq_fwd", args_type="odl_fq_fwd_args_t", op="fq", direction="forward", source="fakequant.c",
   cost=lambda f, c, l: _ceil(f["len"], c) * 14)
_k(name="odl_fq_bwd", args_type="odl_fq_bwd_args_t", op="fq", direction="input_grad", source="fakequant.c",
   cost=lambda f, c, l: _ceil(f["len"], c) * 6)


def get(name: str) -> Kernel:
    try:
        return REGISTRY[name]
    except KeyError:
        raise OdlError(f"no kernel named {name}") from None


def candidates(op: str, direction: str, precision: str, fields: dict) -> list[Kernel]:
    return [k for k in REGISTRY.values() if k.op == op and k.direction in (direction, "any")
            and precision in k.precisions and k.applies(fields)]


def estimate(name: str, fields: dict, cores: int, lanes: int) -> float:
    return float(get(name).cost(fields, cores, lanes))
