/* odl's timing model of the rv32-cluster, as a QEMU TCG plugin (docs/performance.md, "Timed cycles").
 *
 * QEMU runs the firmware instruction by instruction (-icount, one vCPU at a time, deterministic); this plugin keeps
 * a clock per hart and advances it by a cycle-approximate model of an in-order, single-issue core:
 *   - a scoreboard: an instruction issues when its source registers are ready (load-use, multiply, FP latency,
 *     vector results), occupies the pipeline for its issue cycles (vector instructions by the bits of their results
 *     or operands over a 32-bit datapath), and taken branches and jumps pay their refill;
 *   - a shared instruction cache (set-associative, LRU, refill cycles per miss);
 *   - synchronisation between harts by happens-before: a hart woken from wfi by a software interrupt, or reading a
 *     word of the fork/join runtime (.data.odl_team) another hart wrote, continues no earlier than the writer's clock;
 *   - the cluster DMA as one FIFO engine (setup + max(rows, bytes / bytes per cycle)) that hart 0 programs; a wait
 *     stalls hart 0 until the transfer's modelled completion;
 *   - per parallel region, each core's TCDM accesses (word-interleaved banks) and FPU uses are replayed in their
 *     recorded times: two cores on one bank in one cycle, or more FP operations than shared FPUs, delay the later core.
 * A second clock per hart counts one cycle per instruction with the same synchronisation and DMA waits ("ipc1"): the
 * step's instructions on its critical path, every one counted.
 *
 * The hart is read from the program (mhartid, once per translation block): under -icount QEMU hands plugin callbacks
 * the index of the vCPU that translated the code, not of the one running it.
 *
 * The firmware marks the step with stores to `odl_timing_port` (targets/rv32-cluster/odl_timing.h): step begin/end
 * and kernel call begin/end (hart 0, around odl_parallel). The DMA is watched at the entries of its functions
 * (targets/rv32-cluster/dma.c): odl_dma_start issues a transfer (its source from a1, row bytes and rows from a2, a3;
 * a source in the read-only level rom=LO:HI takes rom_setup + bytes / rom_bytes_per_cycle),
 * odl_dma_wait waits for a ticket (a0), start_when_full waits for the oldest of a full command queue, and
 * odl_dma_engine_run, QEMU's stand-in for the DMA engine, copies: its
 * instructions are charged to no hart (a real DMA does the copy), up to its return address. With races=1 the plugin also reports every address one hart writes and
 * another reads or writes within the same parallel region (between the same barriers).
 *
 * Arguments (key=value): out=FILE (JSON report), port=ADDR, sync=LO:HI, l1=LO:HI, rom=LO:HI, barrier=ADDR, dma_start=ADDR,
 * dma_wait=ADDR, dma_engine=ADDR, and the
 * model's parameters (see PARAMS below; odl passes them from target.json "timing"). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "qemu_plugin_abi.h"

ODL_PLUGIN_EXPORT int qemu_plugin_version = ODL_QEMU_PLUGIN_API;

#define MAX_HARTS 9   /* 8 cores and the DMA controller */
#define CLINT_MSIP 0x02000000u

/* ---- parameters ---------------------------------------------------------------------------------------------- */
typedef struct { const char *name; long value; } param_t;
static param_t PARAMS[] = {
  {"load_use", 1},        /* extra cycles before a loaded value can be used */
  {"branch_taken", 2},    /* pipeline refill after a taken branch */
  {"jump", 1},            /* jal */
  {"jump_reg", 2},        /* jalr */
  {"mul", 0},             /* extra latency of mul */
  {"mulh", 5},            /* mulh*: issue cycles */
  {"div", 35},            /* div/rem: issue cycles */
  {"fp_latency", 2},      /* FP add/mul/fma: extra cycles until the result can be used (pipelined) */
  {"fp_div", 15}, {"fp_sqrt", 15}, {"fp_cvt", 1},
  {"datapath_bits", 32},  /* vector instructions issue for ceil(VL * width / datapath_bits) cycles */
  {"vlen", 128},
  {"icache_bytes", 4096}, {"icache_ways", 4}, {"icache_line", 16}, {"icache_refill", 10},
  {"tcdm_banks", 16}, {"bank_word", 4},
  {"fpus", 0},            /* 0: a private FPU per core; N: N FPUs shared, core k uses FPU k % N */
  {"dma_setup", 10}, {"dma_bytes_per_cycle", 8}, {"dma_queue", 64},
  {"rom_setup", 100}, {"rom_bytes_per_cycle", 1},   /* the DMA reading the read-only level (rom=LO:HI) */
  {"wake", 2},            /* cycles from the software interrupt to the woken hart's first instruction */
  {"races", 0},
  {"harts", 8},           /* harts running, the DMA controller included */
  {"ctrl", -1},           /* the DMA controller's hart (-1: none): not a core, so a call's end does not wait for it */
};
#define NPARAMS (sizeof PARAMS / sizeof PARAMS[0])
static long P(const char *n) {
  for (size_t i = 0; i < NPARAMS; i++)
    if (!strcmp(PARAMS[i].name, n)) return PARAMS[i].value;
  return 0;
}
static long p_load_use, p_branch, p_jump, p_jump_reg, p_mul, p_mulh, p_div, p_fp, p_fdiv, p_fsqrt, p_fcvt, p_dp,
    p_vlen, p_ic_bytes, p_ic_ways, p_ic_line, p_ic_refill, p_banks, p_bank_word, p_fpus, p_dma_setup, p_dma_bpc, p_dma_queue,
    p_rom_setup, p_rom_bpc, p_wake, p_races, p_harts, p_ctrl;

/* ---- stall causes --------------------------------------------------------------------------------------------- */
enum cause { S_LOAD_USE, S_BRANCH, S_FP_LATENCY, S_MUL, S_VECTOR, S_BANK, S_FPU, S_ICACHE, S_DMA_WAIT, S_SYNC,
             S_COUNT };
static const char *CAUSE[S_COUNT] = {"load_use", "branch", "fp_latency", "mul_div", "vector", "bank_conflict",
                                     "fpu_contention", "icache", "dma_wait", "sync"};

/* ---- per-hart state ------------------------------------------------------------------------------------------- */
typedef struct { uint64_t t; uint32_t res; uint8_t fp; uint8_t occ; } ev_t;   /* fp: 0 TCDM access, 1 FPU use, 2 I-cache line fetch */
typedef struct {
  uint64_t clock, iclock, insns;           /* timed clock, one-instruction-one-cycle clock, instructions */
  uint64_t ready[96];
  uint8_t ready_cause[96];
  uint64_t stall[S_COUNT];
  uint32_t vl, sew;
  uint32_t expect_pc;                      /* pc after the previous instruction if it did not branch */
  uint8_t prev_branch, after_wfi, emu, charged;
  uint32_t emu_ret;                        /* the DMA engine stand-in returns here */
  uint32_t last_line;
  uint64_t last_cost;                      /* cycles charged to the instruction in flight (refunded for markers) */
  uint32_t epoch;                          /* barriers passed in this region (race detector) */
  uint64_t mem_t0;                         /* issue cycle of the instruction in flight */
  uint32_t mem_k, mem_word;                /* its distinct words so far (one per cycle on a 32-bit port), the last */
  ev_t *ev;
  size_t nev, cap;
} hart_t;
static hart_t H[MAX_HARTS];
static unsigned cur;                       /* the hart running now (mhartid, read at each translation block) */
static struct qemu_plugin_register *hart_reg, *xreg[32];
static odl_g_byte_array *regbuf;

/* ---- firmware addresses --------------------------------------------------------------------------------------- */
static uint32_t port_addr, sync_lo, sync_hi, l1_lo, l1_hi, barrier_addr, fn_dma_start, fn_dma_wait, fn_dma_engine;
enum { F_DMA_START = 1, F_DMA_WAIT, F_DMA_ENGINE, F_DMA_FULL };
static uint32_t fn_dma_full;
static uint32_t rom_lo, rom_hi;      /* the read-only level (frozen weights): DMA reads from it at its own timing */
static char *out_path;

/* ---- happens-before through the runtime's shared words -------------------------------------------------------- */
#define SYNC_WORDS 1024
static uint64_t sync_t[SYNC_WORDS], sync_it[SYNC_WORDS];
static uint64_t ipi_t[MAX_HARTS], ipi_it[MAX_HARTS];
static int ipi_pending[MAX_HARTS];

/* ---- DMA engine (two: one per clock) -------------------------------------------------------------------------- */
#define DMA_RING 4096
static uint64_t dma_free, dma_ifree, dma_done[DMA_RING], dma_idone[DMA_RING];
static uint32_t dma_issued;
static uint64_t dma_busy, dma_transfers, dma_bytes;

/* ---- I-cache -------------------------------------------------------------------------------------------------- */
static uint32_t *ic_tag;
static uint64_t *ic_use, ic_tick, ic_misses, ic_accesses;
static long ic_sets;

/* ---- step, calls, report -------------------------------------------------------------------------------------- */
typedef struct {
  uint64_t t0, it0, cycles, icycles, glue, iglue, glue_wait, insns, stall[S_COUNT], calls;
} call_t;
static call_t *calls;
static size_t ncalls;
static int in_step, call_open;
static uint32_t call_idx;
static uint64_t call_t0, call_it0, prev_end, prev_iend, prev_wait, call_insns0[MAX_HARTS], call_stall0[MAX_HARTS][S_COUNT];
static uint64_t step_t0, step_it0, step_cycles, step_icycles, step_insns, steps;
static uint64_t unknown_insns;
/* with pcs=1: hart 0's cycles between kernel calls by instruction address (first MiB of RAM), to find where the
 * glue goes; the report lists the addresses with the most */
#define PC_SLOTS (1u << 19)
static uint32_t *glue_pc;

/* ---- race detector -------------------------------------------------------------------------------------------- */
typedef struct { uint32_t addr, region, epoch; uint16_t writers, readers; } shadow_t;
#define SHADOW_BITS 22
static shadow_t *shadow;
static uint32_t region_id;
typedef struct { uint32_t call, addr, pc; uint8_t first, second, kind; } race_t;
#define MAX_RACES 64
static race_t races[MAX_RACES];
static uint64_t nraces;
static uint32_t last_pc[MAX_HARTS];

static void fail(const char *msg) {
  fprintf(stderr, "odl timing plugin: %s\n", msg);
  exit(70);
}

/* ---- the core model ------------------------------------------------------------------------------------------- */
static uint64_t max64(uint64_t a, uint64_t b) { return a > b ? a : b; }

static void stall_to(hart_t *h, uint64_t t, int cause) {
  if (t > h->clock) {
    h->stall[cause] += t - h->clock;
    h->clock = t;
  }
}

static int src_cause(int kind) {
  switch (kind) {
    case K_LOAD: case K_FLOAD: case K_VLOAD: case K_AMO: return S_LOAD_USE;
    case K_FP: case K_FDIV: case K_FSQRT: case K_FCVT: case K_VFP: case K_VRED: return S_FP_LATENCY;
    case K_MUL: case K_MULH: case K_DIV: return S_MUL;
    default: return S_VECTOR;
  }
}

static uint64_t vec_cycles(const hart_t *h, const insn_t *d) {
  uint64_t w = h->sew;
  if (d->kind == K_VLOAD || d->kind == K_VSTORE) w = d->eew;
  else if (d->widen) w = 2 * h->sew;
  uint64_t c = (h->vl * w + (uint64_t)p_dp - 1) / (uint64_t)p_dp;
  return c ? c : 1;
}

static void record(hart_t *h, uint32_t res, int fp, uint64_t occ, uint64_t t);

/* Looks a line up in the shared cache (LRU); returns 1 on a miss (the line is then filled). */
static int icache_lookup(uint32_t line) {
  ic_accesses++;
  long set = (long)(line % (uint32_t)ic_sets);
  uint32_t *tag = ic_tag + set * p_ic_ways;
  uint64_t *use = ic_use + set * p_ic_ways;
  long victim = 0;
  for (long w = 0; w < p_ic_ways; w++) {
    if (tag[w] == line + 1) {
      use[w] = ++ic_tick;
      return 0;
    }
    if (use[w] < use[victim]) victim = w;
  }
  ic_misses++;
  tag[victim] = line + 1;
  use[victim] = ++ic_tick;
  return 1;
}

/* A fetch from a new line. Inside a kernel call the cores share the cache: the fetch is recorded and looked up when
 * the call's streams are replayed in modelled time (QEMU's order of running the harts is not the hardware's, nor
 * the same from run to run); between calls only hart 0 runs and looks up at once. */
static void icache(hart_t *h, uint32_t pc) {
  uint32_t line = pc / (uint32_t)p_ic_line;
  if (line == h->last_line || p_ic_bytes <= 0) return;
  h->last_line = line;
  if (call_open) {
    record(h, line, 2, (uint64_t)p_ic_refill, h->clock);
    return;
  }
  if (icache_lookup(line)) {
    h->stall[S_ICACHE] += (uint64_t)p_ic_refill;
    h->clock += (uint64_t)p_ic_refill;
  }
}

static void record(hart_t *h, uint32_t res, int fp, uint64_t occ, uint64_t t) {
  if (h->nev == h->cap) {
    h->cap = h->cap ? 2 * h->cap : 4096;
    h->ev = realloc(h->ev, h->cap * sizeof *h->ev);
    if (!h->ev) fail("out of memory recording a region");
  }
  h->ev[h->nev++] = (ev_t){t, res, (uint8_t)fp, (uint8_t)(occ > 255 ? 255 : occ)};
}

static void vset(hart_t *h, const insn_t *d) {
  uint32_t vtype = d->vtype;
  if (d->vtype_reg) {
    g_byte_array_set_size(regbuf, 0);
    qemu_plugin_read_register(xreg[d->rs[1]], regbuf);
    memcpy(&vtype, regbuf->data, 4);
  }
  uint32_t sew = 8u << ((vtype >> 3) & 7u), lmul = vtype & 7u;
  uint32_t vlmax = lmul < 4 ? ((uint32_t)p_vlen << lmul) / sew : ((uint32_t)p_vlen >> (8 - lmul)) / sew;
  uint32_t avl = h->vl;
  if (d->avl == 0) {
    g_byte_array_set_size(regbuf, 0);
    qemu_plugin_read_register(xreg[d->rs[0]], regbuf);
    memcpy(&avl, regbuf->data, 4);
  } else if (d->avl == 1) {
    avl = d->avl_imm;
  } else if (d->avl == 2) {
    avl = vlmax;
  }
  h->sew = sew;
  h->vl = avl < vlmax ? avl : vlmax;
}

static void dma_issue(hart_t *h, uint32_t bytes, uint32_t rows, uint32_t src);
static void dma_wait(hart_t *h, uint32_t ticket);
static uint32_t xread(int r) {
  uint32_t v;
  g_byte_array_set_size(regbuf, 0);
  qemu_plugin_read_register(xreg[r], regbuf);
  memcpy(&v, regbuf->data, 4);
  return v;
}

/* The entry of a watched function (the DMA's). */
static void special(hart_t *h, const insn_t *d) {
  if (!in_step) return;
  if (d->special == F_DMA_START) {
    uint32_t row_bytes = xread(12), rows = xread(13);
    dma_issue(h, row_bytes * rows, rows, xread(11));
  } else if (d->special == F_DMA_WAIT) {
    /* a wait on the engine: one poll of its status on the MCU. QEMU's stand-in carries out the queued copies in a
     * loop here (one iteration per transfer): none of that is the hart's work, up to the return */
    dma_wait(h, xread(10));
    h->emu = 1;
    h->emu_ret = xread(1);
  } else if (d->special == F_DMA_ENGINE) {
    h->emu = 1;
    h->emu_ret = xread(1);
  } else if (d->special == F_DMA_FULL) {
    /* the emulation's queue is full: a hardware queue of that depth stalls the issuing hart until its oldest
     * transfer completes; the emulated wait (running the oldest copy, re-enqueueing) is charged to no hart */
    h->emu = 1;
    h->emu_ret = xread(1);
    if (dma_issued >= (uint32_t)p_dma_queue) dma_wait(h, dma_issued - (uint32_t)p_dma_queue);
  }
}

/* Issue one instruction on the current hart. */
static void exec_insn(unsigned vcpu, void *ud) {
  (void)vcpu;
  const insn_t *d = ud;
  hart_t *h = &H[cur];
  if (h->emu) {                            /* the emulated DMA engine's copy: no hart's work */
    if (d->pc != h->emu_ret) { h->charged = 0; return; }
    h->emu = 0;
  }
  if (d->special) {
    special(h, d);
    if (h->emu && d->special != F_DMA_WAIT) { h->charged = 0; return; }
  }
  h->charged = 1;
  uint64_t entry_clock = h->clock;
  last_pc[cur] = d->pc;
  if (h->after_wfi) {                      /* woken: no earlier than the interrupt that woke us */
    h->after_wfi = 0;
    if (ipi_pending[cur]) {
      stall_to(h, ipi_t[cur] + (uint64_t)p_wake, S_SYNC);
      h->iclock = max64(h->iclock, ipi_it[cur] + (uint64_t)p_wake);
      ipi_pending[cur] = 0;
    }
  }
  if (h->prev_branch && d->pc != h->expect_pc) {
    h->stall[S_BRANCH] += (uint64_t)p_branch;
    h->clock += (uint64_t)p_branch;
  }
  h->prev_branch = d->kind == K_BRANCH;
  h->expect_pc = d->pc + d->size;
  icache(h, d->pc);
  uint64_t t = h->clock;
  for (int k = 0; k < 3; k++) {
    uint8_t r = d->rs[k];
    if (r != R_NONE && h->ready[r] > t) {
      h->stall[h->ready_cause[r]] += h->ready[r] - t;
      t = h->ready[r];
    }
  }
  if (d->vmask && h->ready[R_V] > t) {
    h->stall[h->ready_cause[R_V]] += h->ready[R_V] - t;
    t = h->ready[R_V];
  }
  uint64_t occ = 1, lat = 1;
  switch (d->kind) {
    case K_LOAD: case K_FLOAD: case K_AMO: lat = 1 + (uint64_t)p_load_use; break;
    case K_JAL: occ = 1 + (uint64_t)p_jump; break;
    case K_JALR: occ = 1 + (uint64_t)p_jump_reg; break;
    case K_MUL: lat = 1 + (uint64_t)p_mul; break;
    case K_MULH: occ = lat = (uint64_t)p_mulh; break;
    case K_DIV: occ = lat = (uint64_t)p_div; break;
    case K_FP: lat = 1 + (uint64_t)p_fp; break;
    case K_FDIV: occ = lat = (uint64_t)p_fdiv; break;
    case K_FSQRT: occ = lat = (uint64_t)p_fsqrt; break;
    case K_FCVT: lat = 1 + (uint64_t)p_fcvt; break;
    case K_VSET: vset(h, d); break;
    case K_VLOAD: occ = vec_cycles(h, d); lat = occ + (uint64_t)p_load_use; break;
    case K_VSTORE: occ = vec_cycles(h, d); break;
    case K_VFP: case K_VRED: occ = vec_cycles(h, d); lat = occ + (uint64_t)p_fp; break;
    case K_VINT: occ = lat = vec_cycles(h, d); break;
    case K_OTHER: unknown_insns++; break;
    default: break;
  }
  if (d->kind == K_JAL || d->kind == K_JALR) h->stall[S_BRANCH] += occ - 1;
  else if (occ > 1) h->stall[d->kind >= K_VSET ? S_VECTOR : S_MUL] += occ - 1;
  if (p_fpus > 0 && call_open && (d->kind == K_FP || d->kind == K_FDIV || d->kind == K_FSQRT || d->kind == K_FCVT ||
                     d->kind == K_VFP || d->kind == K_VRED))
    record(h, (uint32_t)(cur % (unsigned)p_fpus), 1, occ, t);
  if (d->rd != R_NONE) {                   /* (the register stalls up to t are counted above) */
    h->ready[d->rd] = t + lat;
    h->ready_cause[d->rd] = (uint8_t)src_cause(d->kind);
  }
  h->last_cost = occ;
  h->mem_t0 = t;
  h->mem_k = 0;
  h->mem_word = UINT32_MAX;
  h->clock = t + occ;
  h->iclock += 1;
  h->insns++;
  if (glue_pc && in_step && !call_open && cur == 0 && d->pc - 0x80000000u < 2 * PC_SLOTS)
    glue_pc[(d->pc - 0x80000000u) / 2] += (uint32_t)(h->clock - entry_clock);   /* every cycle this instruction took */
  if (d->kind == K_WFI) h->after_wfi = 1;
}

/* ---- markers, synchronisation and data accesses -------------------------------------------------------------- */
enum { EV_STEP_BEGIN = 1, EV_STEP_END, EV_CALL_BEGIN, EV_CALL_END };

static void reset_step(void) {
  for (int k = 0; k < MAX_HARTS; k++) {
    hart_t *h = &H[k];
    h->clock = h->iclock = h->insns = 0;
    memset(h->ready, 0, sizeof h->ready);
    memset(h->stall, 0, sizeof h->stall);
    h->nev = 0;
    h->epoch = 0;
    ipi_pending[k] = 0;
    ipi_t[k] = ipi_it[k] = 0;
  }
  memset(sync_t, 0, sizeof sync_t);
  memset(sync_it, 0, sizeof sync_it);
  dma_free = dma_ifree = 0;
  memset(dma_done, 0, sizeof dma_done);
  memset(dma_idone, 0, sizeof dma_idone);
  dma_busy = dma_transfers = dma_bytes = 0;
  prev_end = prev_iend = prev_wait = 0;
  ic_misses = ic_accesses = 0;             /* counted per step; the cache keeps its contents */
  if (glue_pc) memset(glue_pc, 0, PC_SLOTS * sizeof *glue_pc);
  for (size_t i = 0; i < ncalls; i++) memset(&calls[i], 0, sizeof calls[i]);
}

static call_t *call_at(uint32_t i) {
  if (i >= ncalls) {
    size_t n = i + 64;
    calls = realloc(calls, n * sizeof *calls);
    if (!calls) fail("out of memory (calls)");
    memset(calls + ncalls, 0, (n - ncalls) * sizeof *calls);
    ncalls = n;
  }
  return &calls[i];
}

static int cmp_ev(const void *a, const void *b) {
  const ev_t *x = *(const ev_t *const *)a, *y = *(const ev_t *const *)b;
  return x->t < y->t ? -1 : x->t > y->t;
}

/* Replays the region's recorded TCDM and FPU uses of all harts in recorded-time order; returns each hart's delay. */
static void replay(uint64_t delay[MAX_HARTS]) {
  size_t total = 0;
  for (int k = 0; k < p_harts; k++) total += H[k].nev;
  memset(delay, 0, MAX_HARTS * sizeof delay[0]);
  if (!total) return;
  const ev_t **all = malloc(total * sizeof *all);
  uint8_t *who = malloc(total);
  if (!all || !who) fail("out of memory replaying a region");
  size_t n = 0;
  for (int k = 0; k < p_harts; k++)
    for (size_t i = 0; i < H[k].nev; i++) all[n++] = &H[k].ev[i];
  qsort(all, total, sizeof *all, cmp_ev);   /* ties: qsort is not stable, so order ties by hart below */
  for (size_t i = 0; i < total; i++) {
    int k = 0;
    while (!(all[i] >= H[k].ev && all[i] < H[k].ev + H[k].nev)) k++;
    who[i] = (uint8_t)k;
  }
  for (size_t i = 0; i + 1 < total; i++)    /* equal times: lower hart first (fixed priority), deterministic */
    for (size_t j = i + 1; j < total && all[j]->t == all[i]->t; j++)
      if (who[j] < who[i]) {
        const ev_t *e = all[i]; all[i] = all[j]; all[j] = e;
        uint8_t w = who[i]; who[i] = who[j]; who[j] = w;
      }
  static uint64_t bank_free[256], fpu_free[MAX_HARTS];
  memset(bank_free, 0, sizeof bank_free);
  memset(fpu_free, 0, sizeof fpu_free);
  for (size_t i = 0; i < total; i++) {
    const ev_t *e = all[i];
    int k = who[i];
    uint64_t t = e->t + delay[k];
    if (e->fp == 2) {                         /* an instruction fetch from a new line: the shared I-cache */
      if (icache_lookup(e->res)) {
        H[k].stall[S_ICACHE] += e->occ;
        delay[k] += e->occ;
      }
      continue;
    }
    uint64_t *slot = e->fp ? &fpu_free[e->res % MAX_HARTS] : &bank_free[e->res & 255];
    if (*slot > t) {
      H[k].stall[e->fp ? S_FPU : S_BANK] += *slot - t;
      delay[k] += *slot - t;
      t = *slot;
    }
    *slot = t + (e->fp ? e->occ : 1);
  }
  free(all);
  free(who);
  for (int k = 0; k < p_harts; k++) H[k].nev = 0;
}

static void call_begin(uint32_t idx) {
  hart_t *h0 = &H[0];
  call_idx = idx;
  call_open = 1;
  call_t *c = call_at(idx);
  c->glue += h0->clock - prev_end;
  c->iglue += h0->iclock - prev_iend;
  c->glue_wait += h0->stall[S_DMA_WAIT] - prev_wait;
  call_t0 = h0->clock;
  call_it0 = h0->iclock;
  for (int k = 0; k < p_harts; k++) {
    call_insns0[k] = H[k].insns;
    memcpy(call_stall0[k], H[k].stall, sizeof H[k].stall);
    H[k].nev = 0;
    H[k].epoch = 0;
  }
  region_id++;
}

static void call_end(uint32_t idx) {
  hart_t *h0 = &H[0];
  if (!call_open || idx != call_idx) fail("call markers out of order");
  call_open = 0;
  uint64_t delay[MAX_HARTS], base = 0, extra = 0;
  replay(delay);
  for (int k = 1; k < p_harts; k++)
    if (k != p_ctrl) base = max64(base, H[k].clock);
  extra = delay[0];
  for (int k = 1; k < p_harts; k++)
    if (k != p_ctrl && H[k].clock + delay[k] > base + extra) extra = H[k].clock + delay[k] - base;
  for (int k = 1; k < p_harts; k++) H[k].clock += delay[k];
  h0->clock += extra;
  call_t *c = call_at(idx);
  c->cycles += h0->clock - call_t0;
  c->icycles += h0->iclock - call_it0;
  c->calls++;
  /* the critical hart's stalls: the one that finished last */
  int crit = 0;
  for (int k = 1; k < p_harts; k++)
    if (k != p_ctrl && H[k].clock > H[crit].clock) crit = k;
  uint64_t most = 0;
  for (int k = 0; k < p_harts; k++)
    if (k != p_ctrl) most = max64(most, H[k].insns - call_insns0[k]);
  c->insns += most;
  for (int s = 0; s < S_COUNT; s++) c->stall[s] += H[crit].stall[s] - call_stall0[crit][s];
  if (crit != 0) c->stall[S_SYNC] += H[0].stall[S_SYNC] - call_stall0[0][S_SYNC];
  prev_end = h0->clock;
  prev_iend = h0->iclock;
  prev_wait = h0->stall[S_DMA_WAIT];
}

static void dma_issue(hart_t *h, uint32_t bytes, uint32_t rows, uint32_t src) {
  int rom = src >= rom_lo && src < rom_hi;
  uint64_t bpc = (uint64_t)(rom ? p_rom_bpc : p_dma_bpc);
  uint64_t per = (bytes + bpc - 1) / bpc;
  uint64_t dur = bytes ? (uint64_t)(rom ? p_rom_setup : p_dma_setup) + max64(rows, per) : 0;
  uint64_t s = max64(h->clock, dma_free), is = max64(h->iclock, dma_ifree);
  dma_free = s + dur;
  dma_ifree = is + dur;
  dma_issued++;
  dma_done[dma_issued % DMA_RING] = dma_free;
  dma_idone[dma_issued % DMA_RING] = dma_ifree;
  dma_busy += dur;
  dma_transfers++;
  dma_bytes += bytes;
}

static void dma_wait(hart_t *h, uint32_t ticket) {
  if (ticket == 0 || ticket > dma_issued) return;
  if (dma_issued - ticket >= DMA_RING) fail("DMA wait for a transfer older than the model's ring");
  stall_to(h, dma_done[ticket % DMA_RING], S_DMA_WAIT);
  h->iclock = max64(h->iclock, dma_idone[ticket % DMA_RING]);
}

static void marker(hart_t *h, uint32_t v) {
  uint32_t code = v >> 24, arg = v & 0xffffffu;
  if (code == 0) return;                   /* start-up code zeroing the word */
  /* the marker store is instrumentation: refund it */
  if (h->charged) {
    h->clock -= h->last_cost;
    h->iclock -= 1;
    h->insns -= 1;
  }
  switch (code) {
    case EV_STEP_BEGIN:
      reset_step();
      in_step = 1;
      step_t0 = H[0].clock;
      step_it0 = H[0].iclock;
      break;
    case EV_STEP_END:
      if (call_open) fail("step ended inside a kernel call");
      in_step = 0;
      step_cycles = H[0].clock - step_t0;
      step_icycles = H[0].iclock - step_it0;
      step_insns = 0;
      for (int k = 0; k < p_harts; k++) step_insns += H[k].insns;
      steps++;
      break;
    case EV_CALL_BEGIN: call_begin(arg); break;
    case EV_CALL_END: call_end(arg); break;
    default: fail("unknown marker");
  }
}

static void race_check(hart_t *h, uint32_t addr, int store, unsigned size) {
  for (unsigned b = 0; b < size; b++) {
    uint32_t a = addr + b;
    uint32_t slot = (a * 2654435761u) >> (32 - SHADOW_BITS);
    shadow_t *s;
    for (;;) {
      s = &shadow[slot];
      if (s->region != region_id || s->addr == a) break;
      slot = (slot + 1) & ((1u << SHADOW_BITS) - 1);
    }
    if (s->region != region_id || s->epoch != h->epoch) {
      s->addr = a; s->region = region_id; s->epoch = h->epoch; s->writers = s->readers = 0;
    }
    uint16_t me = (uint16_t)(1u << cur);
    uint16_t other = store ? (uint16_t)((s->writers | s->readers) & ~me) : (uint16_t)(s->writers & ~me);
    if (other) {
      if (nraces < MAX_RACES) {
        int first = __builtin_ctz(other);
        races[nraces] = (race_t){call_idx, a, last_pc[cur], (uint8_t)first, (uint8_t)cur, (uint8_t)store};
      }
      nraces++;
      return;
    }
    if (store) s->writers |= me;
    else s->readers |= me;
  }
}

static void mem_access(unsigned vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *ud) {
  (void)vcpu;
  const insn_t *d = ud;
  hart_t *h = &H[cur];
  uint32_t a = (uint32_t)vaddr;
  int store = qemu_plugin_mem_is_store(info);
  if (a == port_addr && store) {
    marker(h, qemu_plugin_mem_get_value(info).data.u32);
    return;
  }
  if (h->emu) return;
  if (a >= sync_lo && a < sync_hi) {                      /* the runtime's shared words: happens-before */
    uint32_t w = ((a - sync_lo) >> 2) % SYNC_WORDS;
    if (d->kind == K_AMO || !store) {
      stall_to(h, sync_t[w], S_SYNC);
      h->iclock = max64(h->iclock, sync_it[w]);
    }
    if (d->kind == K_AMO || store) {
      sync_t[w] = max64(sync_t[w], h->clock);
      sync_it[w] = max64(sync_it[w], h->iclock);
    }
    if (d->kind == K_AMO && a == barrier_addr) h->epoch++;
    return;
  }
  if (a >= CLINT_MSIP && a < CLINT_MSIP + 4 * MAX_HARTS && store) {
    unsigned to = (a - CLINT_MSIP) / 4;
    if (qemu_plugin_mem_get_value(info).data.u32 && !ipi_pending[to]) {
      ipi_pending[to] = 1;
      ipi_t[to] = h->clock;
      ipi_it[to] = h->iclock;
    }
    return;
  }
  if (a >= l1_lo && a < l1_hi) {
    if (call_open) {
      uint32_t word = a / (uint32_t)p_bank_word;   /* elements of one word: one bank access */
      if (word != h->mem_word) {
        h->mem_word = word;
        record(h, word % (uint32_t)p_banks, 0, 1, h->mem_t0 + h->mem_k++);
      }
      if (p_races) race_check(h, a, store, 1u << qemu_plugin_mem_size_shift(info));
    }
  } else if (p_races && call_open && a >= 0x80000000u) {
    race_check(h, a, store, 1u << qemu_plugin_mem_size_shift(info));
  }
}

static void tb_exec(unsigned vcpu, void *ud) {
  (void)vcpu; (void)ud;
  g_byte_array_set_size(regbuf, 0);
  qemu_plugin_read_register(hart_reg, regbuf);
  uint32_t id;
  memcpy(&id, regbuf->data, 4);
  if (id >= MAX_HARTS) fail("mhartid out of range");
  cur = id;
}

static void translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_R_REGS, 0);
  size_t n = qemu_plugin_tb_n_insns(tb);
  for (size_t k = 0; k < n; k++) {
    struct qemu_plugin_insn *in = qemu_plugin_tb_get_insn(tb, k);
    uint8_t b[4] = {0};
    size_t sz = qemu_plugin_insn_size(in);
    qemu_plugin_insn_data(in, b, sizeof b);
    insn_t *d = malloc(sizeof *d);          /* lives as long as the translation: never freed (small) */
    if (!d) fail("out of memory decoding");
    odl_decode(d, (uint32_t)qemu_plugin_insn_vaddr(in), b, (unsigned)sz);
    if (d->pc == fn_dma_start) d->special = F_DMA_START;
    else if (d->pc == fn_dma_wait) d->special = F_DMA_WAIT;
    else if (d->pc == fn_dma_engine) d->special = F_DMA_ENGINE;
    else if (d->pc == fn_dma_full) d->special = F_DMA_FULL;
    int vreads = d->special || (d->kind == K_VSET && (d->avl == 0 || d->vtype_reg));
    qemu_plugin_register_vcpu_insn_exec_cb(in, exec_insn, vreads ? QEMU_PLUGIN_CB_R_REGS : QEMU_PLUGIN_CB_NO_REGS, d);
    qemu_plugin_register_vcpu_mem_cb(in, mem_access, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW, d);
  }
}

static void vcpu_init(qemu_plugin_id_t id, unsigned vcpu) {
  (void)id; (void)vcpu;
  if (hart_reg) return;
  static const char *xnames[32] = {"zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "fp", "s1", "a0", "a1", "a2",
                                   "a3", "a4", "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9",
                                   "s10", "s11", "t3", "t4", "t5", "t6"};
  odl_g_array *a = qemu_plugin_get_registers();
  const qemu_plugin_reg_descriptor *r = (const qemu_plugin_reg_descriptor *)a->data;
  for (unsigned k = 0; k < a->len; k++) {
    if (!strcmp(r[k].name, "mhartid")) hart_reg = r[k].handle;
    for (int x = 0; x < 32; x++)
      if (!strcmp(r[k].name, xnames[x]) || (x == 8 && !strcmp(r[k].name, "s0"))) xreg[x] = r[k].handle;
  }
  if (!hart_reg) fail("QEMU exposes no mhartid register to plugins");
  for (int x = 1; x < 32; x++)
    if (!xreg[x]) fail("QEMU exposes no integer register file to plugins");
  regbuf = g_byte_array_new();
}

/* ---- report --------------------------------------------------------------------------------------------------- */
static void write_report(qemu_plugin_id_t id, void *ud) {
  (void)id; (void)ud;
  FILE *f = fopen(out_path, "w");
  if (!f) fail("cannot write the report");
  fprintf(f, "{\"steps\": %" PRIu64 ", \"cycles\": %" PRIu64 ", \"instructions_critical\": %" PRIu64
             ", \"instructions_all_harts\": %" PRIu64 ", \"unknown_instructions\": %" PRIu64 ",\n",
          steps, step_cycles, step_icycles, step_insns, unknown_insns);
  fprintf(f, " \"icache\": {\"accesses\": %" PRIu64 ", \"misses\": %" PRIu64 "},\n", ic_accesses, ic_misses);
  fprintf(f, " \"dma\": {\"transfers\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"busy\": %" PRIu64 "},\n",
          dma_transfers, dma_bytes, dma_busy);
  fprintf(f, " \"harts\": [");
  for (int k = 0; k < p_harts; k++) {
    fprintf(f, "%s{\"clock\": %" PRIu64 ", \"instructions\": %" PRIu64 ", \"stalls\": {", k ? ", " : "",
            H[k].clock, H[k].insns);
    for (int s = 0; s < S_COUNT; s++) fprintf(f, "%s\"%s\": %" PRIu64, s ? ", " : "", CAUSE[s], H[k].stall[s]);
    fprintf(f, "}}");
  }
  fprintf(f, "],\n \"calls\": [");
  int first = 1;
  for (size_t i = 0; i < ncalls; i++) {
    const call_t *c = &calls[i];
    if (!c->calls) continue;
    fprintf(f, "%s\n  {\"index\": %zu, \"invocations\": %" PRIu64 ", \"cycles\": %" PRIu64 ", \"instructions\": %"
               PRIu64 ", \"glue\": %" PRIu64 ", \"glue_instructions\": %" PRIu64 ", \"glue_dma_wait\": %" PRIu64
               ", \"ipc1_cycles\": %" PRIu64 ", \"stalls\": {", first ? "" : ",", i, c->calls, c->cycles, c->insns,
            c->glue, c->iglue, c->glue_wait, c->icycles);
    for (int s = 0; s < S_COUNT; s++) fprintf(f, "%s\"%s\": %" PRIu64, s ? ", " : "", CAUSE[s], c->stall[s]);
    fprintf(f, "}}");
    first = 0;
  }
  fprintf(f, "],\n \"races\": {\"count\": %" PRIu64 ", \"first\": [", nraces);
  for (uint64_t i = 0; i < nraces && i < MAX_RACES; i++)
    fprintf(f, "%s{\"call\": %u, \"addr\": %u, \"pc\": %u, \"harts\": [%u, %u], \"store\": %u}", i ? ", " : "",
            races[i].call, races[i].addr, races[i].pc, races[i].first, races[i].second, races[i].kind);
  fprintf(f, "]},\n \"glue_pcs\": [");
  if (glue_pc) {
    int n = 0;
    for (uint32_t i = 0; i < PC_SLOTS; i++)
      if (glue_pc[i] > 0) fprintf(f, "%s[%u, %u]", n++ ? ", " : "", 0x80000000u + 2 * i, glue_pc[i]);
  }
  fprintf(f, "],\n \"parameters\": {");
  for (size_t i = 0; i < NPARAMS; i++) fprintf(f, "%s\"%s\": %ld", i ? ", " : "", PARAMS[i].name, PARAMS[i].value);
  fprintf(f, "}}\n");
  fclose(f);
}

static uint32_t parse_u32(const char *s) { return (uint32_t)strtoul(s, NULL, 0); }
static void parse_range(const char *s, uint32_t *lo, uint32_t *hi) {
  char *e;
  *lo = (uint32_t)strtoul(s, &e, 0);
  *hi = *e == ':' ? (uint32_t)strtoul(e + 1, NULL, 0) : *lo;
}

ODL_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  (void)info;
  for (int i = 0; i < argc; i++) {
    char *eq = strchr(argv[i], '=');
    if (!eq) { fprintf(stderr, "odl timing plugin: argument %s is not key=value\n", argv[i]); return 1; }
    *eq = 0;
    const char *k = argv[i], *v = eq + 1;
    if (!strcmp(k, "out")) out_path = strdup(v);
    else if (!strcmp(k, "port")) port_addr = parse_u32(v);
    else if (!strcmp(k, "sync")) parse_range(v, &sync_lo, &sync_hi);
    else if (!strcmp(k, "l1")) parse_range(v, &l1_lo, &l1_hi);
    else if (!strcmp(k, "rom")) parse_range(v, &rom_lo, &rom_hi);
    else if (!strcmp(k, "barrier")) barrier_addr = parse_u32(v);
    else if (!strcmp(k, "pcs")) glue_pc = atoi(v) ? calloc(PC_SLOTS, sizeof *glue_pc) : NULL;
    else if (!strcmp(k, "dma_start")) fn_dma_start = parse_u32(v);
    else if (!strcmp(k, "dma_wait")) fn_dma_wait = parse_u32(v);
    else if (!strcmp(k, "dma_engine")) fn_dma_engine = parse_u32(v);
    else if (!strcmp(k, "dma_full")) fn_dma_full = parse_u32(v);
    else {
      size_t p = 0;
      while (p < NPARAMS && strcmp(PARAMS[p].name, k)) p++;
      if (p == NPARAMS) { fprintf(stderr, "odl timing plugin: unknown parameter %s\n", k); return 1; }
      PARAMS[p].value = strtol(v, NULL, 0);
    }
  }
  if (!out_path || !port_addr) { fprintf(stderr, "odl timing plugin: out= and port= are required\n"); return 1; }
  p_load_use = P("load_use"); p_branch = P("branch_taken"); p_jump = P("jump"); p_jump_reg = P("jump_reg");
  p_mul = P("mul"); p_mulh = P("mulh"); p_div = P("div"); p_fp = P("fp_latency"); p_fdiv = P("fp_div");
  p_fsqrt = P("fp_sqrt"); p_fcvt = P("fp_cvt"); p_dp = P("datapath_bits"); p_vlen = P("vlen");
  p_ic_bytes = P("icache_bytes"); p_ic_ways = P("icache_ways"); p_ic_line = P("icache_line");
  p_ic_refill = P("icache_refill"); p_banks = P("tcdm_banks"); p_bank_word = P("bank_word"); p_fpus = P("fpus");
  p_dma_setup = P("dma_setup"); p_dma_bpc = P("dma_bytes_per_cycle"); p_dma_queue = P("dma_queue");
  p_rom_setup = P("rom_setup"); p_rom_bpc = P("rom_bytes_per_cycle"); p_wake = P("wake"); p_races = P("races");
  p_harts = P("harts"); p_ctrl = P("ctrl");
  if (p_harts < 1 || p_harts > MAX_HARTS || p_ctrl >= p_harts || p_dp <= 0 || p_banks < 1 || p_banks > 256 || p_bank_word < 1 ||
      p_dma_bpc < 1 || p_rom_bpc < 1 || p_dma_queue < 1 || p_fpus < 0 || p_fpus > MAX_HARTS || p_ic_line < 1 || p_ic_ways < 1) {
    fprintf(stderr, "odl timing plugin: a parameter is out of range\n");
    return 1;
  }
  if (p_ic_bytes > 0) {
    ic_sets = p_ic_bytes / (p_ic_line * p_ic_ways);
    if (ic_sets < 1) { fprintf(stderr, "odl timing plugin: I-cache smaller than one set\n"); return 1; }
    ic_tag = calloc((size_t)(ic_sets * p_ic_ways), sizeof *ic_tag);
    ic_use = calloc((size_t)(ic_sets * p_ic_ways), sizeof *ic_use);
  }
  for (int k = 0; k < MAX_HARTS; k++) { H[k].sew = 32; H[k].last_line = UINT32_MAX; }
  if (p_races) shadow = calloc((size_t)1 << SHADOW_BITS, sizeof *shadow);
  qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
  qemu_plugin_register_vcpu_tb_trans_cb(id, translate);
  qemu_plugin_register_atexit_cb(id, write_report, 0);
  return 0;
}
