/* rv32-cluster fork/join team (implements odl_team.h).
 *
 * Hart 0 is the master; harts 1..ODL_NUM_CORES-1 are workers. Idle workers sleep in `wfi` with only
 * mie.MSIE enabled (startup.S, every hart; mstatus.MIE stays 0, so no trap is taken: wfi just returns when the
 * CLINT software interrupt is pending). odl_parallel publishes (fn, args), bumps a generation counter and raises msip
 * on every worker; each worker clears its own msip, runs its share and counts itself done; the last one
 * raises msip on hart 0, which also sleeps in wfi while it waits. Nobody spins while idle.
 *
 * All shared state lives in .data (not .bss): workers start using it before hart 0 has zeroed .bss. */
#include <stdint.h>
#include "odl_team.h"
#include "odl_profile.h"
#include "odl_dma.h"

#ifndef ODL_NUM_CORES
#define ODL_NUM_CORES 8
#endif
#if ODL_NUM_CORES < 1 || ODL_NUM_CORES > 8
#error "ODL_NUM_CORES must be 1..8 on rv32-cluster"
#endif

#define CLINT_MSIP ((volatile uint32_t *)0x02000000u)

#define SHARED __attribute__((section(".data.odl_team"), aligned(64)))

static volatile odl_task_fn team_fn SHARED = (odl_task_fn)0;
static void *volatile team_args SHARED = (void *)0;
static volatile uint32_t team_gen SHARED = 0;          /* bumped by every odl_parallel */
static volatile uint32_t team_done SHARED = 0;         /* workers finished with the current job */
static volatile uint32_t bar_count SHARED = 0;         /* sense-reversing barrier */
static volatile uint32_t bar_sense SHARED = 0;
static uint32_t bar_local_sense[8] SHARED = {0};       /* per hart */
static volatile uint32_t team_active SHARED = 0;       /* inside odl_parallel (barriers outside are no-ops) */
#ifdef ODL_DMA_CTRL
static odl_issue_fn volatile ctrl_fn SHARED = (odl_issue_fn)0;   /* the controller's posted job */
static volatile int32_t ctrl_arg SHARED = 0;
static volatile uint32_t ctrl_gen SHARED = 0;                    /* bumped by every post */
static volatile uint32_t ctrl_done SHARED = 0;                   /* the last generation the controller finished */
#endif
#ifdef ODL_PROFILE
static volatile int32_t team_only SHARED = -1;         /* >= 1: only that worker runs the job (profiling) */
static volatile uint64_t team_instret SHARED = 0;      /* profiling: the lone worker's count */
#endif

static inline uint64_t rd_instret(void) {
  uint32_t h0, l, h1;
  do {
    __asm__ volatile("csrr %0, minstreth" : "=r"(h0));
    __asm__ volatile("csrr %0, minstret" : "=r"(l));
    __asm__ volatile("csrr %0, minstreth" : "=r"(h1));
  } while (h0 != h1);
  return ((uint64_t)h1 << 32) | l;
}

static inline int hartid(void) {
  int id;
  __asm__ volatile("csrr %0, mhartid" : "=r"(id));
  return id;
}

static inline void wfi(void) { __asm__ volatile("wfi" ::: "memory"); }
static inline void fence(void) { __asm__ volatile("fence rw, rw" ::: "memory"); }

int odl_core_id(void) { return hartid(); }

/* Sense-reversing barrier. Waiters sleep in wfi (the last one to arrive raises msip on the others):
 * under QEMU's round-robin TCG with -icount a spinning hart would burn a whole scheduling slice
 * (up to 0.1 s of virtual time = 100 M instructions) before the others get to run. */
void odl_barrier(void) {
#if ODL_NUM_CORES > 1
  if (!team_active) return;              /* called outside a parallel region: only one core runs */
  int id = hartid();
  uint32_t sense = bar_local_sense[id] ^ 1u;
  bar_local_sense[id] = sense;
  if (__atomic_add_fetch(&bar_count, 1u, __ATOMIC_ACQ_REL) == ODL_NUM_CORES) {
    __atomic_store_n(&bar_count, 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&bar_sense, sense, __ATOMIC_RELEASE);
    fence();
    for (int h = 0; h < ODL_NUM_CORES; h++)
      if (h != id) CLINT_MSIP[h] = 1;
  } else {
    for (;;) {
      CLINT_MSIP[id] = 0;
      fence();
      if (__atomic_load_n(&bar_sense, __ATOMIC_ACQUIRE) == sense) break;
      wfi();
    }
  }
#endif
}

void odl_parallel(odl_task_fn fn, void *args) {
#if ODL_NUM_CORES > 1
  team_fn = fn;
  team_args = args;
  team_active = 1;
  __atomic_store_n(&team_done, 0u, __ATOMIC_RELAXED);
  __atomic_add_fetch(&team_gen, 1u, __ATOMIC_RELEASE);
  fence();
  for (int h = 1; h < ODL_NUM_CORES; h++) CLINT_MSIP[h] = 1;
  fn(args);
  /* wait for the workers, asleep; the last one to finish raises our msip */
  for (;;) {
    CLINT_MSIP[0] = 0;
    fence();
    if (__atomic_load_n(&team_done, __ATOMIC_ACQUIRE) == ODL_NUM_CORES - 1) break;
    wfi();
  }
  CLINT_MSIP[0] = 0;
  team_active = 0;
  fence();
#else
  fn(args);
#endif
}

#ifdef ODL_PROFILE
/* Profiling fork: every core runs its share alone, one after the other (core 0 first), while the others
 * sleep in wfi, so the hart's minstret delta is exactly its own instructions even where the emulator has
 * one counter for all harts (QEMU -icount). fn must not call odl_barrier (it would wait forever). */
void odl_parallel_profiled(odl_task_fn fn, void *args, uint64_t *core_instret) {
  team_active = 0;                           /* no barriers in a serialized run */
  uint64_t t0 = rd_instret();
  fn(args);
  uint64_t t1 = rd_instret();
  core_instret[0] = t1 - t0;
#if ODL_NUM_CORES > 1
  team_fn = fn;
  team_args = args;
  for (int k = 1; k < ODL_NUM_CORES; k++) {
    team_only = k;
    __atomic_store_n(&team_done, 0u, __ATOMIC_RELAXED);
    __atomic_add_fetch(&team_gen, 1u, __ATOMIC_RELEASE);
    CLINT_MSIP[0] = 0;
    fence();
    /* raise the worker's msip and go to sleep right away, so we do not run while it counts */
    __asm__ volatile("sw %1, 0(%0)\n\twfi" ::"r"(&CLINT_MSIP[k]), "r"(1) : "memory");
    for (;;) {
      CLINT_MSIP[0] = 0;
      fence();
      if (__atomic_load_n(&team_done, __ATOMIC_ACQUIRE) == 1u) break;
      wfi();
    }
    core_instret[k] = team_instret;
  }
  team_only = -1;
  CLINT_MSIP[0] = 0;
  fence();
#endif
}
#endif

#ifdef ODL_DMA_CTRL
/* The hart that programs the DMA (the runner starts ODL_NUM_CORES + 1 harts when the firmware has this symbol). */
volatile uint32_t odl_dma_ctrl_hart __attribute__((used)) SHARED = ODL_NUM_CORES;   /* kept: .data.odl_team is KEEP */

/* The DMA controller (hart ODL_NUM_CORES): sleeps until a job is posted, runs it, tells hart 0. */
static void ctrl_main(void) __attribute__((noreturn));
static void ctrl_main(void) {
  uint32_t seen = 0;
  for (;;) {
    CLINT_MSIP[ODL_NUM_CORES] = 0;
    fence();
    uint32_t g = __atomic_load_n(&ctrl_gen, __ATOMIC_ACQUIRE);
    if (g == seen) {
      wfi();
      continue;
    }
    seen = g;
    ctrl_fn(ctrl_arg);
    fence();
    __atomic_store_n(&ctrl_done, g, __ATOMIC_RELEASE);
    CLINT_MSIP[0] = 1;
  }
}

void odl_dma_ctrl_post(odl_issue_fn fn, int n) {
  ctrl_fn = fn;
  ctrl_arg = n;
  __atomic_add_fetch(&ctrl_gen, 1u, __ATOMIC_RELEASE);
  fence();
  CLINT_MSIP[ODL_NUM_CORES] = 1;
}

void odl_dma_ctrl_join(void) {
  for (;;) {
    CLINT_MSIP[0] = 0;
    fence();
    if (__atomic_load_n(&ctrl_done, __ATOMIC_ACQUIRE) == __atomic_load_n(&ctrl_gen, __ATOMIC_RELAXED)) break;
    wfi();
  }
}
#else
void odl_dma_ctrl_post(odl_issue_fn fn, int n) { fn(n); }
void odl_dma_ctrl_join(void) {}
#endif

/* Entry of harts 1..7 from startup.S (never returns). */
void odl_team_worker_main(int id) __attribute__((noreturn));
void odl_team_worker_main(int id) {
#ifdef ODL_DMA_CTRL
  if (id == ODL_NUM_CORES) ctrl_main();      /* the DMA controller */
#endif
  if (id >= ODL_NUM_CORES) {                 /* not in the team: sleep forever, never woken */
    for (;;) wfi();
  }
  uint32_t seen = 0;                         /* team_gen starts at 0 (.data): a job published before we got here is still run */
  for (;;) {
    CLINT_MSIP[id] = 0;                      /* clear before looking, so a later raise is never lost */
    fence();
    uint32_t g = __atomic_load_n(&team_gen, __ATOMIC_ACQUIRE);
    if (g == seen) {
      wfi();
      continue;
    }
    seen = g;
    odl_task_fn fn = team_fn;
    void *args = team_args;
#ifdef ODL_PROFILE
    int32_t only = team_only;
    if (only >= 0) {                         /* profiling job: one worker at a time, everyone else asleep */
      if (only != id) continue;
      uint64_t t0 = rd_instret();
      fn(args);
      uint64_t t1 = rd_instret();
      team_instret = t1 - t0;
      fence();
      __atomic_store_n(&team_done, 1u, __ATOMIC_RELEASE);
      CLINT_MSIP[0] = 1;
      continue;
    }
#endif
    fn(args);
    if (__atomic_add_fetch(&team_done, 1u, __ATOMIC_ACQ_REL) == ODL_NUM_CORES - 1) {
      fence();
      CLINT_MSIP[0] = 1;
    }
  }
}
