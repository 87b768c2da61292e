"""`odl fleet`: federated learning over emulated devices (FedAvg).

N devices each hold a shard of the training set (iid, or by label: sorted by class and cut in N pieces). A round:
every device boots its firmware with the global model (`odl train --init`), trains E local epochs on its shard on
the device, and hands its weights back; the host averages them weighted by shard size (FedAvg, batch-norm running
statistics included) into the next global model, and evaluates it on the held-out set. Beside it, the same model
trains centrally on the device for the same number of device epochs (R x E epochs over the whole training set), so
the curves compare like with like. Devices run as jobs on a process pool or on Ray (odl.jobs.engines), one emulator each;
a device that fails in a round is left out of that round's average and reported.

Why not Flower: Flower's simulation engine (on Ray) drives in-process `Client` objects whose fit() would here only
call odl train on an emulator; it would add a server/client layer and a heavy dependency around what is a weighted
average of state_dicts, while the scheduling of emulator jobs is already Ray's (or the process pool's).
FedProx (`--strategy fedprox --mu MU`): each device's SGD update adds mu * (w - w_global) to the gradient, w_global
being the weights it booted with (kept on the device as FP32); the aggregation is FedAvg's. SGD, fp32 / fp16 only.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from odl.train import data as datamod
from odl.jobs.engines import run_tasks
from odl.common.errors import OdlError, ToolError
from odl.common.progress import bar as progress_bar, note
from odl.common.fsutil import atomic_path, write_text_atomic
from odl.ir.program import TrainConfig


@dataclass
class FleetOptions:
    data: str = "digits"
    devices: int = 4
    rounds: int = 5
    local_epochs: int = 1
    strategy: str = "fedavg"
    mu: float = 0.01                 # FedProx's proximal coefficient
    split: str = "iid"
    batch: int = 16
    val_split: float = 0.2
    precision: str = "fp32"
    cores: int = 8
    target: str = "rv32-cluster"
    cfg: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    engine: str = "local"
    address: str | None = None
    jobs: int | None = None
    centralized: bool = True
    json_path: str | None = None
    png: str | None = None


def shard(y: np.ndarray, devices: int, split: str, seed: int) -> list[np.ndarray]:
    """Indices of each device's shard: a seeded permutation cut in N near-equal parts (iid), or the samples sorted
    by label (stably, after a seeded shuffle) cut in N parts, so each device sees a few classes only (label)."""
    n = len(y)
    if devices > n:
        raise OdlError(f"--devices {devices}: more devices than the {n} training samples")
    perm = np.random.default_rng(seed).permutation(n)
    if split == "label":
        if y.ndim != 1:
            raise OdlError("--split label needs class labels (loss xent)")
        perm = perm[np.argsort(y[perm], kind="stable")]
    elif split != "iid":
        raise OdlError(f"unknown --split '{split}' (expected iid or label)")
    return [np.sort(p) for p in np.array_split(perm, devices)]


def fedavg(states: list[dict], weights: list[int]) -> dict:
    """Weighted average of state_dicts (floating tensors; integer buffers such as BN's num_batches_tracked take
    the first device's value)."""
    tot = float(sum(weights))
    out = {}
    for k, v0 in states[0].items():
        if torch.is_floating_point(v0):
            acc = torch.zeros_like(v0, dtype=torch.float64)
            for sd, w in zip(states, weights):
                acc += sd[k].to(torch.float64) * (w / tot)
            out[k] = acc.to(v0.dtype)
        else:
            out[k] = v0.clone()
    return out


def _sd_bytes(sd: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def _sd_load(b: bytes) -> dict:
    return torch.load(io.BytesIO(b), weights_only=True)


def device_round(job: dict) -> dict:
    """One device, one round: `odl train` from the global weights on the device's shard for E epochs. Runs on a
    pool or Ray worker; returns the weights (bytes of a state_dict) or the error, never raises."""
    from odl.train.loop import TrainOptions, train
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"odl_fleet_d{job['device']}_"))
    try:
        np.savez(tmp / "shard.npz", **job["arrays"])
        (tmp / "init.pt").write_bytes(job["init"])
        o = job["opts"]
        cfg = TrainConfig(**o["cfg"])
        topts = TrainOptions(data=str(tmp / "shard.npz"), epochs=o["local_epochs"], batch=o["batch"],
                             precision=o["precision"], cores=o["cores"], target=o["target"], cfg=cfg,
                             seed=o["seed"] + 1000 * job["round"] + job["device"], init=str(tmp / "init.pt"),
                             checkpoint=str(tmp / "out.pt"), eval_every=o["local_epochs"], reference="none",
                             progress=False, normalize=False)
        rep = train(job["model"], topts, log=lambda s: None)
        ck = torch.load(tmp / "out.pt", weights_only=False)
        return {"device": job["device"], "round": job["round"], "ok": True, "state": _sd_bytes(ck["model"]),
                "samples": int(len(job["arrays"]["y"])), "local_val_acc": rep["final"]["val_acc"],
                "train_loss": rep["epochs"][-1]["train_loss"], "wall_s": round(time.perf_counter() - t0, 2)}
    except (OdlError, ToolError) as e:
        return {"device": job["device"], "round": job["round"], "ok": False, "error": f"{type(e).__name__}: {e}",
                "wall_s": round(time.perf_counter() - t0, 2)}
    except Exception as e:  # a worker-side failure must not sink the round
        return {"device": job["device"], "round": job["round"], "ok": False,
                "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                "wall_s": round(time.perf_counter() - t0, 2)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_fleet_options(opts: FleetOptions) -> None:
    """Refuse bad fleet options (exit 2) before anything is loaded; the device options as odl train checks them."""
    from odl.train.loop import check_device_options
    if opts.strategy not in ("fedavg", "fedprox"):
        raise OdlError(f"unknown --strategy '{opts.strategy}' (expected fedavg or fedprox)")
    if opts.strategy == "fedprox":
        if not (opts.mu > 0 and np.isfinite(opts.mu)):
            raise OdlError(f"--mu {opts.mu}: FedProx needs a finite mu > 0")
        if opts.cfg.optimizer != "sgd" or opts.precision == "mixed":
            raise OdlError("--strategy fedprox: the device adds the proximal term in its SGD update; use "
                           "--optimizer sgd and --precision fp32 or fp16")
    for flag, v in (("--devices", opts.devices), ("--rounds", opts.rounds), ("--local-epochs", opts.local_epochs)):
        if v < 1:
            raise OdlError(f"{flag} {v}: must be >= 1")
    check_device_options(opts.precision, opts.cores, opts.target, opts.batch)


def _round(r: int, jobs: list, opts: FleetOptions) -> tuple[list, list]:
    """Run one round's device jobs on the engine: (results of the devices that trained, of those that failed),
    each by device number."""
    results = []
    bar = progress_bar(total=len(jobs), desc=f"fleet round {r + 1}/{opts.rounds}", unit="device")

    def done(res):
        results.append(res)
        bar.update(1)
        if not res["ok"]:
            note(f"device {res['device']} failed in round {r + 1}: {res['error']}")
    try:
        run_tasks(device_round, jobs, opts.engine, opts.address, opts.jobs or min(len(jobs), os.cpu_count() or 1),
                  done)
    finally:
        bar.close()
    ok = sorted((x for x in results if x["ok"]), key=lambda x: x["device"])
    failed = sorted((x for x in results if not x["ok"]), key=lambda x: x["device"])
    return ok, failed


def _centralized(model_spec: str, ds, initial_sd: dict, jopts: dict, opts: FleetOptions) -> list[dict]:
    """The baseline: one device trains on all the data for as many epochs as each device did in total, from the
    same initial weights; its accuracy after every `local_epochs`."""
    from odl.train.loop import TrainOptions, train
    tmp = Path(tempfile.mkdtemp(prefix="odl_fleet_central_"))
    try:
        np.savez(tmp / "all.npz", x=ds.x, y=ds.y, x_val=ds.x_val, y_val=ds.y_val)
        torch.save(initial_sd, tmp / "init.pt")
        crep = train(model_spec, TrainOptions(
            data=str(tmp / "all.npz"), epochs=opts.rounds * opts.local_epochs, batch=opts.batch,
            precision=opts.precision, cores=opts.cores, target=opts.target, cfg=TrainConfig(**jopts["cfg"]),
            seed=opts.seed, init=str(tmp / "init.pt"), reference="none", progress=False, normalize=False,
            eval_every=opts.local_epochs), log=lambda s: None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [{"device_epochs": e["epoch"], "val_acc": e["val_acc"]} for e in crep["epochs"] if e["val_acc"] is not None]


def fleet(model_spec: str, opts: FleetOptions, log=print) -> dict:
    from odl.frontend.trace import load_model
    from odl.train.loop import check_model_takes_data, host_eval
    t_start = time.perf_counter()
    _check_fleet_options(opts)
    cfg = opts.cfg
    ds = datamod.load(opts.data, cfg.loss, opts.val_split, opts.seed)       # normalised with the global statistics
    shards = shard(ds.y, opts.devices, opts.split, opts.seed)
    small = min(len(s) for s in shards)
    if small < 1:
        raise OdlError(f"--devices {opts.devices}: a shard would be empty")
    torch.manual_seed(opts.seed)
    model = load_model(model_spec)
    check_model_takes_data(model, ds, opts.batch, cfg.loss)     # the same refusals as odl train, before any device
    global_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    initial_sd = global_sd      # the centralized baseline starts from the same weights (global_sd is rebound)
    name = model_spec if ":" not in model_spec else model_spec.rsplit(":", 1)[1]
    log(f"odl fleet {name}: {opts.devices} devices ({opts.split} split, {small}-{max(len(s) for s in shards)} "
        f"samples each), {opts.rounds} rounds x {opts.local_epochs} local epochs, {opts.precision}, "
        f"{opts.cores} cores per device, engine {opts.engine}")
    jopts = {"local_epochs": opts.local_epochs, "batch": opts.batch, "precision": opts.precision,
             "cores": opts.cores, "target": opts.target, "cfg": asdict(cfg), "seed": opts.seed}
    # FedProx: every device adds mu * (w - w_global) to its gradients, w_global being the weights it booted with
    local_cfg = dict(jopts["cfg"], prox_mu=opts.mu if opts.strategy == "fedprox" else 0.0)
    rounds = []

    def global_acc(sd):
        model.load_state_dict(sd)
        return host_eval(model, ds.x_val, ds.y_val, cfg.loss)

    acc0, loss0 = global_acc(global_sd)
    for r in range(opts.rounds):
        init = _sd_bytes(global_sd)
        jobs = [{"model": model_spec, "device": k, "round": r, "init": init, "opts": dict(jopts, cfg=local_cfg),
                 "arrays": {"x": ds.x[idx], "y": ds.y[idx], "x_val": ds.x_val, "y_val": ds.y_val}}
                for k, idx in enumerate(shards)]
        ok, failed = _round(r, jobs, opts)
        if ok:
            global_sd = fedavg([_sd_load(x["state"]) for x in ok], [x["samples"] for x in ok])
        acc, loss = global_acc(global_sd)
        rounds.append({"round": r + 1, "device_epochs": (r + 1) * opts.local_epochs, "val_acc": acc,
                       "val_loss": loss, "devices_ok": [x["device"] for x in ok],
                       "devices_failed": [{"device": x["device"], "error": x["error"]} for x in failed],
                       "local": [{"device": x["device"], "samples": x["samples"], "train_loss": x["train_loss"],
                                  "local_val_acc": x["local_val_acc"], "wall_s": x["wall_s"]} for x in ok]})
        log(f"round {r + 1}: global val acc {_pct(acc)} (loss {loss:.4f}); {len(ok)} of {opts.devices} devices"
            + (f", failed: {', '.join(str(x['device']) for x in failed)}" if failed else ""))
        if not ok:
            raise ToolError(f"every device failed in round {r + 1}: {failed[0]['error']}")

    central = None
    if opts.centralized:
        central = _centralized(model_spec, ds, initial_sd, jopts, opts)
        log(f"centralized on the device, {opts.rounds * opts.local_epochs} epochs: val acc "
            f"{_pct(central[-1]['val_acc'])}")
    rep = {"model": name, "data": ds.name, "devices": opts.devices, "split": opts.split, "rounds_total": opts.rounds,
           "local_epochs": opts.local_epochs, "strategy": opts.strategy, "precision": opts.precision,
           "cores": opts.cores, "engine": opts.engine, "shard_samples": [int(len(s)) for s in shards],
           "initial_val_acc": acc0, "rounds": rounds, "centralized": central,
           "final": {"val_acc": rounds[-1]["val_acc"],
                     "centralized_val_acc": central[-1]["val_acc"] if central else None},
           "normalize": ds.normalize, "wall_s": round(time.perf_counter() - t_start, 1)}
    if opts.json_path:
        write_text_atomic(opts.json_path, json.dumps(rep, indent=2))
    if opts.png:
        _plot(rep, opts.png)
    return rep


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}%"


def _plot(rep: dict, path: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [0] + [r["device_epochs"] for r in rep["rounds"]]
    ax.plot(xs, [rep["initial_val_acc"]] + [r["val_acc"] for r in rep["rounds"]], "o-",
            label=f"FedAvg global model ({rep['devices']} devices, {rep['split']})")
    if rep["centralized"]:
        ax.plot([0] + [c["device_epochs"] for c in rep["centralized"]],
                [rep["initial_val_acc"]] + [c["val_acc"] for c in rep["centralized"]], "s--", label="centralized")
    ax.set_xlabel("device epochs")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"odl fleet {rep['model']} on {rep['data']}, {rep['precision']}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
