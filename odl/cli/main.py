"""The `odl` command line."""
from __future__ import annotations

import argparse
import sys

from odl.common.errors import OdlError, ToolError
from odl.run.device import DeviceOptions


def train_config(a):
    from odl.common.precision import STORES
    from odl.lower.layers import split_option
    from odl.lower.lowering import TrainConfig
    loss = a.loss
    if loss is None:  # the model's own default (e.g. ad_autoencoder: mse), else cross-entropy
        from odl.frontend.trace import default_loss, load_model
        loss = default_loss(load_model(a.model))
    acc = getattr(a, "accumulate", "fp32")
    if acc == "fp16" and getattr(a, "precision", "fp16") == "fp32":
        raise OdlError("--accumulate fp16: FP16 accumulation is for --precision fp16 (or mixed); fp32 steps "
                       "accumulate in FP32")
    store, store_layers = split_option("--store", getattr(a, "store", "compute"), STORES, ("fp8",))
    if store == "fp8" and getattr(a, "precision", "fp16") not in ("fp16", "fp32"):
        raise OdlError(f"--store {a.store}: with --precision fp16 or fp32, not {a.precision} (mixed precision's "
                       f"loss scaling rewrites the gradients FP8 storage packs)")
    qat, bn = qat_options(a)
    qat, qat_layers = split_option("--qat", qat, ("none", "int8"), ("int8",))
    return TrainConfig(lr=a.lr, train=a.train, bn=bn, loss=loss, optimizer=a.optimizer, momentum=a.momentum,
                       weight_decay=a.weight_decay, seed=a.seed, accumulate=acc,
                       dma_controller=getattr(a, "dma_controller", False), frozen=getattr(a, "frozen", "auto"),
                       store=store, qat=qat, store_layers=store_layers, qat_layers=qat_layers)


def refuse_store(a, command: str):
    """Commands that do not run a --store fp8 step yet say so (instead of running the compute-precision one)."""
    if getattr(a, "store", "compute") != "compute":
        raise OdlError(f"--store {a.store}: odl {command} does not support FP8 storage yet (odl validate, profile "
                       f"and train do)")


def qat_options(a) -> tuple[str, str]:
    """(--qat, the batch norm mode): --qat-bn frozen runs batch norm on its running statistics, train on batch
    statistics as --bn train does; fold is refused (not built)."""
    qat, qbn = getattr(a, "qat", "none"), getattr(a, "qat_bn", None)
    if qbn is None:
        return qat, a.bn
    if qat == "none":
        raise OdlError(f"--qat-bn {qbn} needs --qat int8 (or int8:REGEX)")
    if qbn == "fold":
        raise OdlError("--qat-bn fold (batch norm folded into the convolution weights before their fake "
                       "quantization, as torch's ConvBn2d QAT modules do) is not built yet: use --qat-bn frozen "
                       "(running statistics) or train (batch statistics)")
    if a.bn != "train" and a.bn != qbn:
        raise OdlError(f"--bn {a.bn} and --qat-bn {qbn} contradict each other: give one of them")
    return qat, qbn


def add_frontend_arg(p):
    p.add_argument("--frontend", default=None, choices=["export", "fx"],
                   help="how the model is read: torch.export to core ATen (default) or symbolic torch.fx (the first "
                        "frontend); also $ODL_FRONTEND")


def add_model_args(p):
    p.add_argument("model", help="built-in model name or path/to/file.py:Name")
    add_frontend_arg(p)
    p.add_argument("--target", default="rv32-cluster")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--cores", type=int, default=8)
    p.add_argument("--input-shape", default=None, help="NxCxHxW (default: the model's input_shape)")
    p.add_argument("--memory", default="hierarchy", choices=["flat", "hierarchy"],
                   help="hierarchy: kernels work on L1 tiles that DMA moves from and to the L2 arena (the target's "
                        "memory description); flat: one memory every core reads in one cycle")


def add_train_args(p):
    p.add_argument("--train", default="all", metavar="all|auto|last:K|REGEX",
                   help="what trains: all, auto (a sparse update chosen to fit the memory budget, layers nearest the "
                        "output first: odl/plan/sparse.py), the last K layers with parameters, or parameters matching "
                        "REGEX")
    p.add_argument("--bn", default="train", choices=["train", "frozen"],
                   help="batch norm: batch statistics (train) or running statistics (frozen)")
    p.add_argument("--loss", default=None, choices=["xent", "mse", "nll", "bce"],
                   help="xent: softmax cross-entropy on logits; mse; nll: on log-probabilities (a model ending in "
                        "log_softmax); bce: BCE with logits, float targets in [0, 1]. Default: the model's "
                        "default_loss attribute, else xent")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=0.01, help="learning rate")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--accumulate", default="fp32", choices=["fp32", "fp16"],
                   help="FP16 matmul accumulators: fp32 lanes (default, as PyTorch) or fp16 (as PULP-TrainLib: faster "
                        "on a 32-bit FPU, less accurate; validate says whether the model still passes)")
    p.add_argument("--frozen", default="auto", choices=["auto", "l2", "rom"],
                   help="where weights that do not train live: l2 (the arena, in the budget), rom (the target's "
                        "read-only level, e.g. flash: outside the budget, read by the DMA at its bandwidth), or auto "
                        "(default): l2 when the step fits the budget so, else rom. odl train and the embedded "
                        "library keep them in l2")
    p.add_argument("--store", default="compute", metavar="compute|fp8|fp8:REGEX",
                   help="tensors kept for the backward and gradients passed between layers: in the compute "
                        "precision (default), or fp8: E4M3 activations, E5M2 gradients, per-tensor delayed scaling "
                        "(docs/formats.md); fp8:REGEX only for the layers whose name (module path, as reports show "
                        "it) REGEX matches")
    p.add_argument("--qat", default="none", metavar="none|int8|int8:REGEX",
                   help="quantization-aware training: int8 fake-quantizes every Conv/Linear weight (symmetric, per "
                        "output channel) and the activations an int8 model requantizes (per tensor, uint8, ranges "
                        "by moving average) with straight-through gradients, as torch.ao.quantization does "
                        "(docs/quantization.md); int8:REGEX only the layers whose name REGEX matches")
    p.add_argument("--qat-bn", default=None, choices=["frozen", "train", "fold"],
                   help="--qat: batch norm on its running statistics (frozen) or on batch statistics (train); fold "
                        "is not built yet. Default: as --bn")
    p.add_argument("--dma-controller", action="store_true",
                   help="memory hierarchy, QEMU: one more hart, a DMA controller, issues the next tiles' transfers "
                        "while the cores run the kernel (as a PULP cluster's controller core)")


def add_embed_args(p):
    """Flags of the embedded library (odl.h) beyond the training settings: odl compile and odl params."""
    p.add_argument("--batch", type=int, default=None, help="odl.h: samples per odl_train_step (default: the model's)")
    p.add_argument("--init", default=None, metavar="CKPT.pt",
                   help="odl.h: the initial state (an odl train checkpoint: its input normalisation too)")
    p.add_argument("--loss-scale", default="dynamic", metavar="dynamic|S", help="odl.h, mixed: loss scaling")


def _cmd_validate(a) -> int:
    from odl.deploy.compile import parse_bytes
    from odl.verify.validate import validate
    rep = validate(a.model, a.target, a.precision, a.cores, a.input_shape, a.seed, a.lr, a.json, a.keep,
                   steps=a.steps, cfg=train_config(a), device=DeviceOptions.from_args(a), memory=a.memory,
                   budget=parse_bytes(a.budget) if a.budget is not None else None)
    return 0 if rep["passed"] else 1


def refuse_qat(a, command: str, why: str) -> None:
    if getattr(a, "qat", "none") != "none":
        raise OdlError(f"--qat {a.qat}: odl {command} does not support quantization-aware training yet ({why}); "
                       f"odl validate, profile and train do")


def _cmd_compile(a) -> int:
    if a.deploy == "int8":
        return _cmd_compile_int8(a)
    refuse_store(a, "compile")
    refuse_qat(a, "compile", "its project and odl.h do not carry the observers' state into checkpoints")
    from odl.deploy.compile import compile_project, parse_bytes
    from odl.embed.project import AppOptions
    budget = parse_bytes(a.budget) if a.budget is not None else None
    cfg = train_config(a)
    embed = _embed_options(a) if (a.batch is not None or a.init is not None or a.loss_scale != "dynamic") else None
    compile_project(a.model, a.output, a.target, a.precision, a.cores, a.input_shape, a.seed, cfg,
                    budget=budget, force=a.force, memory=a.memory, embed=embed,
                    app=AppOptions(app=a.app, data=a.data, epochs=a.epochs))
    return 0


def _cmd_compile_int8(a) -> int:
    """odl compile --deploy int8: the inference program of a QAT checkpoint (odl/deploy/int8/)."""
    if a.app is not None or a.data is not None:
        raise OdlError("--deploy int8 builds odl_predict only: --app and --data are for the training library")
    if a.precision != "fp32" or a.batch is not None:
        raise OdlError("--deploy int8: --precision and --batch do not apply (int8 codes, one sample per odl_predict)")
    from odl.deploy.int8.project import compile_int8
    compile_int8(a.model, a.output, a.init, a.target, a.cores, a.input_shape, a.force)
    return 0


def _embed_options(a):
    from odl.deploy.compile import parse_bytes
    from odl.embed.library import EmbedOptions
    from odl.frontend.trace import default_input_shape, load_model, parse_shape
    shape = parse_shape(a.input_shape) if a.input_shape else default_input_shape(load_model(a.model))
    return EmbedOptions(batch=a.batch if a.batch is not None else (shape[0] if shape else 16), precision=a.precision,
                        cores=a.cores, target=a.target, cfg=train_config(a), loss_scale=a.loss_scale,
                        memory=a.memory, init=a.init, seed=a.seed, input_shape=a.input_shape,
                        budget=parse_bytes(a.budget) if a.budget is not None else None)


def _cmd_params(a) -> int:
    refuse_store(a, "params")
    refuse_qat(a, "params", "the observers' state would not travel between blob and checkpoint")
    from odl.embed.params import params
    params(a.model, a.input, _embed_options(a), checkpoint=a.checkpoint, blob_out=a.blob, flash_out=a.flash)
    return 0


def _cmd_models(a) -> int:
    from odl.frontend.trace import default_loss, trace
    from odl.lower.lowering import TrainConfig, lower
    from odl.models import BUILTIN
    for name, cls in sorted(BUILTIN.items()):
        m = cls()
        g = trace(m, tuple(m.input_shape))
        p = lower(g, "fp32", TrainConfig(loss=default_loss(m)))
        nparam = sum(v.numel() for v in m.parameters())
        print(f"{name:14s} input {'x'.join(map(str, m.input_shape)):12s} loss {default_loss(m):5s} "
              f"params {nparam:8d}  MACs/step fwd {p.macs_forward} bwd {p.macs_backward} "
              f"total {p.macs_forward + p.macs_backward}")
    return 0


def _cmd_profile(a) -> int:
    from odl.perf.profile import have_matplotlib, profile
    if a.png and not have_matplotlib():
        print("odl: error: --png needs matplotlib, which is not installed (pip install matplotlib); "
              "run without --png or install it", file=sys.stderr)
        return 2
    from odl.deploy.compile import parse_bytes
    overrides = {"fpus": a.fpus} if a.fpus is not None else None
    if a.cycle_model == "ipc1" and (overrides or a.check_races or a.dma_controller):
        print("odl: error: --fpus, --check-races and --dma-controller need --cycle-model timed", file=sys.stderr)
        return 2
    if overrides:
        from odl.run.timing_plugin import parameters
        from odl.target.description import load_target
        parameters(load_target(a.target), overrides)      # a bad --fpus: exit 2 before anything is built
    rep = profile(a.model, a.target, a.precision, a.cores, a.input_shape, a.seed, train_config(a), a.json, a.png,
                  a.keep, memory=a.memory, budget=parse_bytes(a.budget) if a.budget is not None else None,
                  cycle_model=a.cycle_model, overrides=overrides, races=a.check_races)
    if a.check_races and rep["races"].get("count"):
        print(f"odl: error: {rep['races']['count']} data races between harts (first: {rep['races']['first'][:3]})",
              file=sys.stderr)
        return 1
    return 0


def _cmd_bench(a) -> int:
    from odl.perf.bench import bench
    bench(json_path=a.json, md_path=a.out, keep_dir=a.keep)
    return 0


def _cmd_tune(a) -> int:
    refuse_store(a, "tune")
    from odl.perf.tune import tune
    tune(a.model, a.target, a.precision, a.cores, a.input_shape, a.seed, train_config(a), memory=a.memory,
         cycle_model=a.cycle_model)
    return 0


def _cmd_sweep(a) -> int:
    from odl.jobs.sweep import sweep
    rows = sweep(a.spec, command_options, engine=a.engine, address=a.address, n_jobs=a.jobs, out_dir=a.out_dir, resume=a.resume)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _cmd_train(a) -> int:
    from odl.train.loop import TrainOptions, train
    cfg = train_config(a)
    opts = TrainOptions(data=a.data, epochs=a.epochs, batch=a.batch, val_split=a.val_split, precision=a.precision,
                        cores=a.cores, target=a.target, cfg=cfg, loss_scale=a.loss_scale, seed=a.seed, init=a.init,
                        checkpoint=a.checkpoint, resume=a.resume, eval_every=a.eval_every, reference=a.reference,
                        json_path=a.json, png=a.png, device=DeviceOptions.from_args(a), keep=a.keep,
                        progress=not a.no_progress, memory=a.memory)
    train(a.model, opts)
    return 0


def _cmd_fleet(a) -> int:
    refuse_store(a, "fleet")
    refuse_qat(a, "fleet", "FedAvg does not average the observers' state")
    from odl.train.fleet import FleetOptions, fleet
    opts = FleetOptions(data=a.data, devices=a.devices, rounds=a.rounds, local_epochs=a.local_epochs,
                        strategy=a.strategy, mu=a.mu, split=a.split, batch=a.batch, val_split=a.val_split,
                        precision=a.precision, cores=a.cores, target=a.target, cfg=train_config(a), seed=a.seed,
                        engine=a.engine, address=a.address, jobs=a.jobs, centralized=not a.no_centralized,
                        json_path=a.json, png=a.png)
    fleet(a.model, opts)
    return 0


def add_compile_embed_args(c):
    """odl compile's options of the embedded library (odl.h) and its apps."""
    for act in c._actions:
        if act.dest == "precision":
            act.choices = ["fp32", "fp16", "mixed"]     # mixed: odl.h's library (the single step: fp16)
    add_embed_args(c)
    c.add_argument("--app", default=None, choices=["personalize"],
                   help="build this firmware app by default: personalize (evaluate, train, save; no host)")
    c.add_argument("--data", default=None, metavar="FILE.npz", help="--app personalize: x, y, x_val, y_val")
    c.add_argument("--epochs", type=int, default=1, help="--app personalize: epochs to train on the device")


def add_params_parser(sub):
    pa = sub.add_parser("params", help="the embedded library's state: flash image or blob -> checkpoint, and back")
    pa.add_argument("input", metavar="IMAGE|BLOB|CKPT.pt", help="flash image, state blob, or a checkpoint (.pt)")
    pa.add_argument("--model", required=True, help="built-in model name or path/to/file.py:Name")
    pa.add_argument("--target", default="rv32-cluster")
    pa.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "mixed"])
    pa.add_argument("--cores", type=int, default=8)
    pa.add_argument("--input-shape", default=None, help="NxCxHxW (default: the model's input_shape)")
    pa.add_argument("--memory", default="hierarchy", choices=["flat", "hierarchy"])
    pa.add_argument("--seed", type=int, default=0)
    add_train_args(pa)
    add_embed_args(pa)
    pa.add_argument("--budget", default=None, metavar="BYTES", help="as given to odl compile")
    pa.add_argument("--checkpoint", default=None, metavar="OUT.pt", help="write the state as an odl train checkpoint")
    pa.add_argument("--blob", default=None, metavar="OUT.bin", help="write the state blob")
    pa.add_argument("--flash", default=None, metavar="OUT.img", help="write a flash image holding the state")
    pa.set_defaults(fn=_cmd_params)


def add_fleet_parser(sub):
    f = sub.add_parser("fleet", help="federated learning (FedAvg) over N emulated devices, beside centralized training",
                       description="N emulated devices each train E local epochs per round on their shard of the "
                                   "data (odl train on the device); the host averages their weights (FedAvg) and "
                                   "evaluates the global model each round.")
    f.add_argument("model", help="built-in model name or path/to/file.py:Name")
    f.add_argument("--data", required=True, metavar="digits|PATH.npz|file.py:fn")
    f.add_argument("--devices", type=int, default=4)
    f.add_argument("--rounds", type=int, default=5)
    f.add_argument("--local-epochs", type=int, default=1, help="epochs each device trains on its shard per round")
    f.add_argument("--strategy", default="fedavg", choices=["fedavg", "fedprox"],
                   help="fedprox: each device adds mu * (w - w_global) to its gradients (SGD, fp32/fp16)")
    f.add_argument("--mu", type=float, default=0.01, help="FedProx's proximal coefficient")
    f.add_argument("--split", default="iid", choices=["iid", "label"], help="how the training set is sharded")
    f.add_argument("--batch", type=int, default=16)
    f.add_argument("--val-split", type=float, default=0.2)
    f.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "mixed"])
    f.add_argument("--cores", type=int, default=8)
    f.add_argument("--target", default="rv32-cluster")
    f.add_argument("--seed", type=int, default=0)
    add_train_args(f)
    f.add_argument("--engine", default="local", choices=["local", "ray"])
    f.add_argument("--address", default=None, help="address of an existing Ray cluster")
    f.add_argument("--jobs", type=int, default=None, help="devices training at a time (default: the core count)")
    f.add_argument("--no-centralized", action="store_true", help="skip the centralized baseline")
    f.add_argument("--json", default=None, help="write the report as JSON to this file")
    f.add_argument("--png", default=None, help="write the accuracy curves (matplotlib)")
    f.set_defaults(fn=_cmd_fleet)


def add_train_parser(sub):
    t = sub.add_parser("train", help="train a model on a data set on the device; checkpoints as PyTorch state_dicts")
    t.add_argument("model", help="built-in model name or path/to/file.py:Name")
    add_frontend_arg(t)
    t.add_argument("--data", required=True, metavar="digits|PATH.npz|file.py:fn",
                   help="digits (scikit-learn's 8x8 digits), an .npz with x, y (+ x_val, y_val), or a function")
    t.add_argument("--epochs", type=int, default=10, help="total epochs (a resumed run ends at the same epoch)")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--val-split", type=float, default=0.2, help="held-out fraction when the data has no x_val")
    t.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "mixed"])
    t.add_argument("--cores", type=int, default=8)
    t.add_argument("--target", default="rv32-cluster")
    t.add_argument("--seed", type=int, default=0, help="initial weights, validation split, shuffling")
    add_train_args(t)
    t.add_argument("--loss-scale", default="dynamic", metavar="dynamic|S", help="mixed precision loss scaling")
    t.add_argument("--init", default=None, metavar="FILE.pt", help="start from these weights (a state_dict or checkpoint)")
    t.add_argument("--checkpoint", default=None, metavar="FILE.pt", help="write a checkpoint after every epoch")
    t.add_argument("--resume", default=None, metavar="FILE.pt", help="continue the run that wrote this checkpoint")
    t.add_argument("--eval-every", type=int, default=1, metavar="N", help="evaluate every N epochs (and at the end)")
    t.add_argument("--reference", default="fp32", choices=["fp32", "none"],
                   help="train PyTorch FP32 on the host beside the device (same weights, batches, order)")
    t.add_argument("--json", default=None, help="write the report as JSON to this file")
    t.add_argument("--png", default=None, help="write train loss and validation accuracy per epoch (matplotlib)")
    t.add_argument("--emulator", default="qemu", choices=["qemu", "renode"])
    t.add_argument("--port", default=None, metavar="PATH|URL", help="train on a board through this serial port")
    t.add_argument("--baud", type=int, default=115200)
    t.add_argument("--flash", default=None, metavar="CMD", help="shell command that flashes {elf} before --port")
    t.add_argument("--bulk", default="fast", choices=["fast", "uart"],
                   help="QEMU: data set in device memory by the loader, batches as indices (fast), or every "
                        "batch over the UART as with a board (uart)")
    t.add_argument("--keep", default=None, metavar="DIR", help="keep generated C, firmware and run files in DIR")
    t.add_argument("--check-races", action="store_true", help="run under QEMU's timing plugin and fail if one hart writes an address another reads or writes within one parallel region (docs/performance.md)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--memory", default="hierarchy", choices=["flat", "hierarchy"],
                   help="hierarchy: kernels work on L1 tiles that DMA moves from and to the L2 arena; flat: one memory")
    t.set_defaults(fn=_cmd_train)


def command_options(cmd: str) -> set[str]:
    """The long options (without dashes) of `odl CMD`, as its parser declares them (a sweep spec names them)."""
    sub = build_parser()._subparsers._group_actions[0].choices[cmd]
    return {o[2:] for a in sub._actions for o in a.option_strings if o.startswith("--")}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="odl", description="On-device learning for RISC-V multicore MCUs")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="run one training step on the device and compare with PyTorch")
    add_model_args(v)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--steps", type=int, default=1, help="optimizer steps on K different batches")
    add_train_args(v)
    v.add_argument("--emulator", default="qemu", choices=["qemu", "renode"],
                   help="emulator to run on when no --port is given (renode must be on PATH)")
    v.add_argument("--port", default=None, metavar="PATH|URL",
                   help="validate on a board through this serial port (or pyserial URL) instead of QEMU")
    v.add_argument("--baud", type=int, default=115200)
    v.add_argument("--flash", default=None, metavar="CMD",
                   help="shell command that flashes the built firmware ({elf}) before --port is opened")
    v.add_argument("--check-races", action="store_true", help="run under QEMU's timing plugin and fail if one hart writes an address another reads or writes within one parallel region (docs/performance.md)")
    v.add_argument("--bulk", default="fast", choices=["fast", "uart"],
                   help="QEMU: move tensors by loader/semihosting (fast) or over the UART protocol like a board")
    v.add_argument("--budget", default=None, metavar="BYTES",
                   help="memory (L2) budget instead of the target's (e.g. 512K): cheap activations are recomputed "
                        "in the backward to fit it")
    v.add_argument("--json", default=None, help="write the report as JSON to this file")
    v.add_argument("--keep", default=None, metavar="DIR", help="keep generated C, firmware and run files in DIR")
    v.add_argument("--step-timeout", type=float, default=None, metavar="S",
                   help="seconds one STEP may run on the device before it counts as hung (default: 60 + 2 us/MAC)")
    v.set_defaults(fn=_cmd_validate)
    c = sub.add_parser("compile", help="write the training step as a standalone C project (Makefile, QEMU script)")
    add_model_args(c)
    c.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batch in weights.bin")
    add_train_args(c)
    c.add_argument("--budget", default=None, metavar="BYTES",
                   help="memory budget instead of the target's (e.g. 262144, 512K, 2M)")
    c.add_argument("-o", "--output", required=True, metavar="DIR", help="project directory to create")
    c.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
    c.add_argument("--deploy", default=None, choices=["int8"],
                   help="int8: the integer inference program (odl_predict) of a QAT checkpoint given by --init "
                        "(odl train --qat int8 --qat-bn frozen) instead of the training project")
    add_compile_embed_args(c)
    c.set_defaults(fn=_cmd_compile)
    add_params_parser(sub)
    pr = sub.add_parser("profile", help="one training step with exact per-core cycle counts, per layer and step")
    add_model_args(pr)
    pr.add_argument("--seed", type=int, default=0)
    add_train_args(pr)
    pr.add_argument("--budget", default=None, metavar="BYTES",
                    help="memory (L2) budget instead of the target's (e.g. 512K): cheap activations are recomputed "
                         "in the backward to fit it")
    pr.add_argument("--cycle-model", choices=("timed", "ipc1"), default="timed",
                    help="timed (default): the QEMU timing plugin's cycle-approximate model, every instruction counted; "
                         "ipc1: one instruction = one cycle per core over the kernel calls (the earlier figures)")
    pr.add_argument("--fpus", type=int, default=None, metavar="N",
                    help="timed model: N FPUs shared by the cores (default: the target's; 0 = one per core)")
    pr.add_argument("--check-races", action="store_true",
                    help="timed model: report any address one hart writes and another reads or writes within one "
                         "parallel region, and exit 1 if there is one")
    pr.add_argument("--json", default=None, help="write the profile as JSON to this file")
    pr.add_argument("--png", default=None, help="write a stacked bar chart (cycles per layer by step); needs matplotlib")
    pr.add_argument("--keep", default=None, metavar="DIR", help="keep generated C, firmware and run files in DIR")
    pr.set_defaults(fn=_cmd_profile)
    b = sub.add_parser("bench", help="ResNet8/DS-CNN x fp32/fp16 x 1/8 harts, FP16/FP32 Conv2D, speedup, wall time")
    b.add_argument("--json", default=None, help="write the results as JSON to this file")
    b.add_argument("--out", default=None, metavar="FILE.md", help="write the table as Markdown to this file")
    b.add_argument("--keep", default=None, metavar="DIR", help="keep the build and run files in DIR")
    b.set_defaults(fn=_cmd_bench)
    t = sub.add_parser("tune", help="measure the variants of every kernel choice of a model on the target and "
                                    "cache the costs (validate/profile/compile then pick the fastest)")
    add_model_args(t)
    t.add_argument("--seed", type=int, default=0)
    add_train_args(t)
    t.add_argument("--cycle-model", choices=("timed", "ipc1"), default="timed",
                   help="what a variant costs: timed cycles (the timing plugin) or instruction counts (ipc1)")
    t.set_defaults(fn=_cmd_tune)
    sw = sub.add_parser("sweep", help="run a grid of validate/profile/train jobs (SPEC.toml) on a process pool or Ray",
                        description="Every combination of SPEC.toml's [grid] (with its [options]) runs as one odl "
                                    "job in its own emulator. Exit codes: 0 every job ran, 1 some failed, 2 bad "
                                    "spec. Example: odl sweep grid.toml --engine ray --out sweep-out")
    sw.add_argument("spec", metavar="SPEC.toml")
    sw.add_argument("--engine", default="local", choices=["local", "ray"],
                    help="local: a process pool; ray: Ray tasks (a local Ray, or --address)")
    sw.add_argument("--address", default=None, help="address of an existing Ray cluster (e.g. 10.0.0.5:6379)")
    sw.add_argument("--jobs", type=int, default=None, help="jobs at a time (default: the number of cores)")
    sw.add_argument("--out", dest="out_dir", default="sweep-out", metavar="DIR",
                    help="results.csv, results.json, pareto.png")
    sw.add_argument("--resume", action="store_true", help="skip the jobs whose results are already in DIR")
    sw.set_defaults(fn=_cmd_sweep)


    add_train_parser(sub)
    add_fleet_parser(sub)
    m = sub.add_parser("models", help="list the built-in models")
    m.set_defaults(fn=_cmd_models)
    from odl.cli.checks import decorate_help
    decorate_help(sub)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if getattr(a, "frontend", None):
        import os
        os.environ["ODL_FRONTEND"] = a.frontend
    from odl.common.cleanup import install_signal_handlers
    install_signal_handlers()
    try:
        from odl.cli.checks import preflight
        preflight(a)   # flags and paths, before anything is built or run
        return a.fn(a)
    except OdlError as e:
        print(f"odl: error: {e}", file=sys.stderr)
        return e.exit_code
    except ToolError as e:
        print(f"odl: {type(e).__name__}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("odl: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug in odl, not the user's fault: show it, but never as "tolerance failed" (1)
        import traceback
        traceback.print_exc()
        print("odl: internal error (please report it with the traceback above)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
