"""The lowering's IR: named arena buffers, pointer arguments, kernel calls, the training configuration and the
lowered Program. Its own module so that the ops (odl/lower/ops/), the planner and the code generator import these types
without importing the lowering driver (which imports the ops).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from odl.ir.graph import Graph
from odl.common.precision import DTYPE_BYTES, precision_of


@dataclass(eq=False)
class Buffer:
    name: str
    nelem: int
    dtype: str = "odl"          # 'odl' (the precision's element type), 'f32', 'i32', 'u8', 'f8' (an FP8 code)
    role: str = "act"           # param, input, label, param_grad, act, grad, scratch, loss
    persistent: bool = False    # lives for the whole step (the host reads it, or it holds state)
    offset: int = -1            # bytes from the arena start, set by the planner
    shape: tuple = ()
    init: tuple | None = None   # preloaded by the host: ('param', name) | ('state', name) | ('input',) |
                                # ('labels',) | ('zeros',)
    space: str = "l2"           # 'l2': the arena (planned by liveness); 'l1': the cluster's L1, placed by the tile pass
                                # (odl/tile/tiler.py) at `offset` bytes from the L1 data area; 'rom': the read-only
                                # level (frozen weights, TrainConfig.frozen), at `offset` bytes from the arena start
                                # past the L2 working area (Program.rom_offset), outside the budget

    def nbytes(self, elem_bytes: int) -> int:
        return self.nelem * (elem_bytes if self.dtype == "odl" else DTYPE_BYTES[self.dtype])

    @property
    def macro(self) -> str:
        return ("L1_" if self.space == "l1" else "B_") + "".join(c if c.isalnum() else "_" for c in self.name)


@dataclass
class Ptr:
    """Pointer argument: buffer start plus `elem` elements, plus `per_sample` elements per loop iteration."""
    buf: Buffer
    per_sample: int = 0
    elem: int = 0


MAX_CORES = 8   # profile buffer columns per call


@dataclass
class Transfer:
    """One DMA transfer between the L2 arena and L1 (odl/tile/tiler.py): `rows` rows of `row_elems` elements of the L2
    buffer `l2` (element `l2_elem` + n * `per_sample` onwards, rows `l2_stride` elements apart) to or from the L1
    buffer `l1` (element `l1_elem`, rows `l1_stride` apart: `row_elems` unless set, tiles being dense in L1; a piece
    of a larger transfer keeps its rows where the whole would put them). rows == 1 is a 1-D transfer."""
    direction: str              # 'in' (L2 -> L1) | 'out' (L1 -> L2)
    l2: "Buffer"
    l2_elem: int
    per_sample: int
    l1: "Buffer"
    l1_elem: int
    rows: int
    row_elems: int
    l2_stride: int
    l1_stride: int = 0

    def nbytes(self, elem_bytes: int) -> int:
        return self.rows * self.row_elems * (self.l1.nbytes(elem_bytes) // max(1, self.l1.nelem))

    def shapes(self, elem_bytes: int) -> list[tuple[int, int]]:
        """(bytes, rows) of each transfer the DMA engine runs for this one (a Transfer is one)."""
        return [(self.nbytes(elem_bytes), self.rows)]


@dataclass
class Gather:
    """im2col by DMA (odl/tile/tiler.py): every in-image element of an im2col block goes straight from the L2 input `l2`
    (element `l2_elem` + n * `per_sample`, one sample [c, h, w]) into the L1 columns `l1` (element `l1_elem`,
    [c*kh*kw, ho*wo]). Stride 1 along W: one 2-D transfer per column row (c, i, j) over its output rows whose input
    row lies in the image and its output columns whose input column does. Stride sw > 1: one per (c, i, j) and
    output row, whose rows are single elements sw apart in x (each costs the DMA at least a cycle). With `zero`,
    the DMA zero-fills the padding too, from a zero row (zeros()). `wide` (stride 1, output as wide as the input,
    memory.gather_wide): one 2-D transfer per tap (i, j) over all channels instead, each row a contiguous run of x
    across the output rows (x's rows follow one another as the output's do); the elements that run past a row's
    edge land on padding columns, which edges() zero again after the data (always, as every gather overwrites
    them). The firmware's odl_dma_im2col issues the same transfers (pieces(), edges() and zeros())."""
    l2: "Buffer"
    l2_elem: int
    per_sample: int
    l1: "Buffer"
    l1_elem: int
    geom: dict                  # c, h, w, kh, kw, sh, sw, pt, pl, ho, wo (no dilation)
    direction: str = "in"
    zero: bool = True           # also write the zero padding (zeros()); False when the columns hold it already
    wide: bool = False          # one transfer per tap over all channels (see above)

    @staticmethod
    def _range(lo_num: int, hi_num: int, stride: int, n: int) -> tuple[int, int]:
        """[v0, v1): the outputs o < n with lo_num <= o*stride <= hi_num (those whose input lies in the image),
        clamped so that v0 <= v1 <= n."""
        v0 = min(n, max(0, -(-lo_num // stride)))
        return v0, max(v0, min(n, hi_num // stride + 1) if hi_num >= 0 else v0)

    def _wide_taps(self):
        """Per tap (i, j): the element offset of channel 0's column row, the output rows [v0, v1) whose input row
        lies in the image, the output columns [a, b) whose input column does, and the channel stride in the columns."""
        g = self.geom
        h, w, kh, kw, sh, sw, pt, pl, ho, wo = (g[k] for k in ("h", "w", "kh", "kw", "sh", "sw", "pt", "pl", "ho",
                                                               "wo"))
        for i in range(kh):
            v0, v1 = self._range(pt - i, h - 1 + pt - i, sh, ho)
            for j in range(kw):
                a, b = self._range(pl - j, w - 1 + pl - j, sw, wo)
                yield i, j, (i * kw + j) * ho * wo, v0, v1, a, b, kh * kw * ho * wo

    def _taps(self):
        """Per column row (c, i, j): its element offset in the columns, the output rows [v0, v1) whose input row lies
        in the image, the output columns [a, b) whose input column does, and the offset of (v0, a)'s input in x."""
        g = self.geom
        h, w, sh, sw, pt, pl = (g[k] for k in ("h", "w", "sh", "sw", "pt", "pl"))
        taps = list(self._wide_taps())
        for ci in range(g["c"]):
            for i, j, base, v0, v1, a, b, cs in taps:
                yield base + ci * cs, v0, v1, a, b, (ci * h + v0 * sh - pt + i) * w + a * sw - pl + j

    def pieces(self) -> list[tuple[int, int, int, int, int, int]]:
        """(l2 element offset, l1 element offset, rows, row elements, l2 row stride, l1 row stride) of each 2-D
        transfer, in issue order."""
        g = self.geom
        sh, sw, w, wo = g["sh"], g["sw"], g["w"], g["wo"]
        out = []
        if self.wide:
            hw = g["h"] * w
            for i, j, base, v0, v1, _, _, cs in self._wide_taps():
                s0, n = (v0 - g["pt"] + i) * w - g["pl"] + j, (v1 - v0) * w
                d, e = max(0, -s0), max(0, s0 + n - hw)      # x's first / last elements: padding columns
                if v1 > v0 and n - d - e > 0:
                    out.append((s0 + d, base + v0 * wo + d, g["c"], n - d - e, hw, cs))
            return out
        for base, v0, v1, a, b, src in self._taps():
            if v1 <= v0 or b <= a:
                continue
            dst = base + v0 * wo + a
            if sw == 1:
                out.append((src, dst, v1 - v0, b - a, sh * w, wo))
            else:
                out += [(src + r * sh * w, dst + r * wo, b - a, 1, sw, 1) for r in range(v1 - v0)]
        return out

    def zeros(self) -> list[tuple[int, int, int, int]]:
        """(l1 element offset, rows, row elements, l1 row stride) of each zero-filling 2-D transfer (source: a zero
        row, stride 0): per column row, its output rows outside the image, then the padding columns of the others
        (the firmware issues them after each column row's data). Wide: per tap, the output rows outside the image,
        all channels at once (the padding columns are edges())."""
        ho, wo = self.geom["ho"], self.geom["wo"]
        out = []
        if self.wide:
            c = self.geom["c"]
            for _, _, base, v0, v1, _, _, cs in self._wide_taps():
                if v1 <= v0:
                    out.append((base, c, ho * wo, cs))
                    continue
                if v0:
                    out.append((base, c, v0 * wo, cs))
                if v1 < ho:
                    out.append((base + v1 * wo, c, (ho - v1) * wo, cs))
            return out
        for base, v0, v1, a, b, _ in self._taps():
            if v1 <= v0 or b <= a:
                out.append((base, ho, wo, wo))
                continue
            if v0:
                out.append((base, v0, wo, wo))
            if v1 < ho:
                out.append((base + v1 * wo, ho - v1, wo, wo))
            if a:
                out.append((base + v0 * wo, v1 - v0, a, wo))
            if b < wo:
                out.append((base + v0 * wo + b, v1 - v0, wo - b, wo))
        return out

    def edges(self) -> list[tuple[int, int, int, int]]:
        """Wide: (l1 element offset, rows, row elements, l1 row stride) of the zero fills of the padding columns the
        data transfers ran over, per tap and output row, all channels at once (issued after the tap's data)."""
        if not self.wide:
            return []
        wo, c = self.geom["wo"], self.geom["c"]
        out = []
        for _, _, base, v0, v1, a, b, cs in self._wide_taps():
            for r in range(v0, v1):
                if a:
                    out.append((base + r * wo, c, a, cs))
                if b < wo:
                    out.append((base + r * wo + b, c, wo - b, cs))
        return out

    # the L2 side as one region (the whole sample), for the prefetch hazard checks of odl/tile/tiler.py
    @property
    def rows(self) -> int:
        return 1

    @property
    def row_elems(self) -> int:
        return self.geom["c"] * self.geom["h"] * self.geom["w"]

    @property
    def l2_stride(self) -> int:
        return self.row_elems

    def shapes(self, elem_bytes: int) -> list[tuple[int, int]]:
        es = self.l1.nbytes(elem_bytes) // max(1, self.l1.nelem)
        return [(r * n * es, r) for _, _, r, n, _, _ in self.pieces()] + \
            [(r * n * es, r) for _, r, n, _ in self.edges()] + \
            ([(r * n * es, r) for _, r, n, _ in self.zeros()] if self.zero else [])

    def nbytes(self, elem_bytes: int) -> int:
        return sum(b for b, _ in self.shapes(elem_bytes))


class CExpr(str):
    """A field value given as a C expression (may use the loop variable `n`)."""


@dataclass
class Call:
    kernel: str                 # C function, e.g. 'odl_mm_nn'
    fields: dict                # struct field -> Ptr | int | float
    layer: str                  # layer name for reports
    step: str                   # 'forward', 'weight_grad', 'input_grad', 'transform', 'loss', 'update'
    loop: int = 0               # > 0: repeat for n in [0, loop) with Ptr.per_sample offsets
    macs: int = 0
    group: int = 0              # consecutive calls with the same non-zero group share one loop
    variant: str = ""           # 'decision key=variant' when the call belongs to a measured choice
    # memory hierarchy (odl/tile/tiler.py): the call is one tile of flat call `origin`; its inputs arrive by `dma_in`
    # (issued during the previous tile's compute when `prefetch`, else just before this tile), its results leave
    # by `dma_out` (issued right after it, overlapping the next tile's compute)
    dma_in: list = field(default_factory=list)
    dma_out: list = field(default_factory=list)
    prefetch: bool = False
    late: list = field(default_factory=list)    # (prefetched tiles) inputs that read what the previous tile writes
                                # back (or gather into columns it uses): issued here, after its write-backs, while
                                # the rest of dma_in was prefetched
    wb_first: bool = False      # (prefetched tiles) the write-backs the previous tile issues go ahead of this tile's
                                # prefetch on the one DMA channel, as the prefetch reads what they write to L2
    early: list = field(default_factory=list)   # gathers of a later tile, issued here after the write-backs
    wait_early: bool = False    # this tile's gathers went out early (`early` of a tile before): wait for them
    wait_wb: bool = True        # (prefetched tiles) wait for the write-backs issued so far: False when none of them
                                # still reads L1 this tile's kernel touches (odl/tile/tiler.py _writeback_waits)
    wb_wait: int = -1           # with wait_wb: the tile whose write-backs to wait for (with every transfer issued
                                # before them: one FIFO channel); -1: the last issued (odl/tile/memory.py WB_TICKETS)
    origin: int = -1
    l1_bytes: int = 0           # L1 in use (highest byte) while this tile computes

    def buffers(self) -> list[Buffer]:
        """Every buffer the call touches: its pointer fields' and, tiled, the L2 side of its DMA transfers."""
        return [v.buf for v in self.fields.values() if isinstance(v, Ptr)] + \
            [t.l2 for t in self.dma_in + self.late + self.dma_out + self.early]


@dataclass
class TrainConfig:
    lr: float = 0.01
    train: str = "all"            # 'all' | 'last:K' (last K layers with parameters) | a regex on parameter names
    bn: str = "train"             # 'train': batch statistics; 'frozen': running statistics (eval mode)
    loss: str = "xent"            # 'xent' (softmax cross-entropy, mean) | 'mse' (mean) | 'nll' (of log-probabilities,
                                  # mean) | 'bce' (BCE with logits, mean; float targets in [0, 1])
    optimizer: str = "sgd"        # 'sgd' | 'adam'
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    seed: int = 0                 # dropout masks
    im2col_bytes: int = 64 * 1024 # largest im2col scratch block (convolutions are chunked by output rows)
    window_bytes: int = 0         # > 0 (memory hierarchy): a conv chunk's input rows fit this many bytes too, and
                                  # chunked input gradients are zeroed first (each col2im tile sees only its rows)
    dma_im2col: bool = False      # memory hierarchy: im2col blocks of undilated convs are gathered by the DMA
                                  # (odl/tile/tiler.py), into two column buffers taken in turn so the next chunk's gather
                                  # overlaps this chunk's matmul
    inplace: bool = True          # ReLU / add outputs and elementwise backward gradients overwrite dead inputs
    prox_mu: float = 0.0          # FedProx: mu * (w - w at the start of the run) added to every gradient (SGD)
    fuse_updates: bool = True     # update each parameter as soon as its gradient is complete (False: all updates
                                  # after the whole backward, as mixed precision's skip-on-overflow needs)
    recompute: frozenset = frozenset()  # values freed after the forward and recomputed where the backward needs
                                        # them (see lower.recompute_candidates; chosen by planner.fit)
    accumulate: str = "fp32"      # FP16 matmul accumulators: 'fp32' lanes (as PyTorch) or 'fp16' (as PULP-TrainLib;
                                  # built with -DODL_MM_ACC16, kernels_c/matmul.c)
    dma_controller: bool = False  # memory hierarchy: a controller hart issues the DMA while the cores compute
                                  # (-DODL_DMA_CTRL; targets/rv32-cluster/odl_dma.h)
    frozen: str = "auto"          # where frozen (not trained) weights live: 'l2' (the arena, in the budget) or 'rom'
                                  # (the target's read-only level, memory.rom: outside the budget, read by the DMA at
                                  # its bandwidth); 'auto': 'l2' when the step fits the budget so, else 'rom'
                                  # (odl.pipeline.fit decides; lowered undecided, and in odl train, it is 'l2')
    store: str = "compute"        # tensors kept for the backward and gradients between layers: 'compute' (the
                                  # step's precision) | 'fp8' (E4M3 / E5M2 with per-tensor scales, odl/lower/fp8.py)

    qat: str = "none"             # quantization-aware training: 'int8' fake-quantizes weights (per channel) and
                                  # activations (per tensor) as torch.ao.quantization does (odl/lower/ops/fakequant.py)
    store_layers: str = ""        # --store fp8:REGEX: only the layers whose name REGEX matches (odl/lower/layers.py);
    qat_layers: str = ""          # --qat int8:REGEX likewise; "" = every layer (the plain --store fp8 / --qat int8)

    @property
    def store_option(self) -> str:
        """--store as written on the command line (fp8:REGEX with a pattern)."""
        return f"{self.store}:{self.store_layers}" if self.store_layers else self.store

    @property
    def qat_option(self) -> str:
        """--qat as written on the command line (int8:REGEX with a pattern)."""
        return f"{self.qat}:{self.qat_layers}" if self.qat_layers else self.qat

    @property
    def build_defines(self) -> list[str]:
        """-D macros the firmware of a step with this configuration is built with."""
        return (["ODL_MM_ACC16"] if self.accumulate == "fp16" else []) + (["ODL_DMA_CTRL"] if self.dma_controller
                                                                            else [])


@dataclass
class Program:
    graph: Graph
    precision: str
    calls: list[Call]
    buffers: list[Buffer]
    params: dict[str, Buffer]           # PyTorch name -> parameter buffer
    param_grads: dict[str, Buffer]
    input: Buffer
    labels: Buffer
    loss: Buffer
    logits: Buffer
    observed_grads: dict[str, tuple[Buffer, str]]   # report name -> (gradient buffer, value it is the gradient of)
    preload: list[Buffer]               # buffers the host writes before a step (contiguous from offset 0)
    state: dict[str, Buffer] = field(default_factory=dict)   # PyTorch buffer name (running stats) -> buffer
    prologue: list[str] = field(default_factory=list)        # C statements run at the start of each step
    dropout: dict[str, dict] = field(default_factory=dict)   # node name -> {'p', 'seed'} (host reproduces masks)
    trainable: list[str] = field(default_factory=list)
    config: TrainConfig | None = None
    activations: dict[str, tuple[Buffer, str]] = field(default_factory=dict)  # report name -> (buffer, value)
    profile: Buffer | None = None   # profiling build: uint32 [calls, MAX_CORES] exact per-core instruction counts
    decisions: list[dict] = field(default_factory=list)   # choices between variants: which, why, costs
    macs_forward: int = 0
    macs_backward: int = 0
    arena_bytes: int = 0
    naive_bytes: int = 0
    memory: object = None               # odl.tile.memory.Hierarchy when the step was tiled for L1 + L2 + DMA, else None
    l1_peak_bytes: int = 0              # L1 data bytes in use at the busiest tile (tiled steps)
    dropped_writebacks: tuple = (0, 0)  # (transfers, bytes) of the write-backs nothing reads, dropped (odl/tile/tiler.py)
    rom_offset: int = 0                 # frozen weights in the read-only level (TrainConfig.frozen 'rom'): its start
    rom_bytes: int = 0                  # (bytes from the arena start, past the L2 working area) and size

    @property
    def extent_bytes(self) -> int:
        """Bytes from the arena start that the step addresses: the L2 working area (arena_bytes, the budget's), and
        the read-only level after it when frozen weights live there."""
        return self.rom_offset + self.rom_bytes if self.rom_bytes else self.arena_bytes
    fp8: object = None                  # odl.lower.fp8.Fp8Plan with --store fp8: what is stored in FP8, the scales

    @property
    def build_defines(self) -> list[str]:
        """-D macros this step's firmware is built with (its TrainConfig's)."""
        return self.config.build_defines if self.config is not None else []

    @property
    def elem_bytes(self) -> int:
        return precision_of(self.precision).elem_bytes
