"""`odl train`: data sources, on-device training against the PyTorch reference, forward-only evaluation,
checkpoints (strict load, host accuracy = device accuracy, bitwise resume after a kill), bad inputs (exit 2)."""
import json
import os
import signal
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from helpers import MODELS, ROOT, kill_pidfile, needs_qemu
from odl.run.device import DeviceOptions

CNN = f"{MODELS / 'digits_cnn.py'}:TinyDigits"
MLP = f"{MODELS / 'digits_cnn.py'}:DigitsMLP"


def _opts(**kw):
    from odl.lower.lowering import TrainConfig
    from odl.train.loop import TrainOptions
    cfg = TrainConfig(lr=kw.pop("lr", 0.05), momentum=kw.pop("momentum", 0.9), optimizer=kw.pop("optimizer", "sgd"),
                      loss=kw.pop("loss", "xent"))
    kw.setdefault("progress", False)
    return TrainOptions(cfg=cfg, **kw)


def _digits_npz(path, n=200, flat=False, val=False):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = d.images[:n].astype(np.float32)
    x = x.reshape(n, 64) if flat else x[:, None]
    arrs = {"x": x, "y": d.target[:n].astype(np.int64)}
    if val:
        arrs.update(x_val=d.images[n:n + 40].astype(np.float32).reshape(40, 64) if flat
                    else d.images[n:n + 40].astype(np.float32)[:, None], y_val=d.target[n:n + 40])
    np.savez(path, **arrs)
    return path


def _main(capsys, *args):
    """odl train in this process (bad-input checks: no emulator, no interpreter start-up): (exit code, stderr)."""
    from odl.cli.main import main
    code = main(["train", *map(str, args)])
    return code, capsys.readouterr().err


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "odl.cli.main", "train", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


# ---- data ---------------------------------------------------------------------------------------------------
def test_digits_split_normalisation_and_order():
    from odl.train import data
    ds = data.load("digits", "xent", 0.2, 0)
    assert (len(ds.x), len(ds.x_val)) == (1437, 360)
    assert ds.x.shape[1:] == (1, 8, 8) and ds.x.dtype == np.float32
    assert abs(float(ds.x.mean())) < 1e-5 and abs(float(ds.x.std()) - 1) < 1e-4   # per channel, training split
    assert ds.normalize["mean"][0] > 4 and len(ds.normalize["std"]) == 1
    raw = ds.x_val * np.float32(ds.normalize["std"][0]) + np.float32(ds.normalize["mean"][0])
    assert np.allclose(raw, np.round(raw), atol=1e-4) and raw.min() > -1e-4 and raw.max() < 16 + 1e-4
    a, b = data.epoch_order(1437, 0, 3), data.epoch_order(1437, 0, 3)
    assert (a == b).all() and not (a == data.epoch_order(1437, 0, 4)).all()
    assert sorted(a) == list(range(1437))


def test_npz_and_fn_sources(tmp_path):
    from odl.train import data
    ds = data.load(str(_digits_npz(tmp_path / "d.npz", flat=True, val=True)), "xent", 0.2, 0)
    assert (ds.x.shape, ds.x_val.shape) == ((200, 64), (40, 64))     # given x_val/y_val: no split
    assert len(ds.normalize["mean"]) == 1                             # N,F data: one scalar
    for fn in ("dataset", "tensors"):
        ds = data.load(f"{MODELS / 'digits_data.py'}:{fn}", "xent", 0.25, 1)
        assert (len(ds.x), len(ds.x_val)) == (120, 40) and ds.x.shape[1:] == (1, 8, 8)


BAD = {
    "no_y": ("npz without y", lambda p: np.savez(p, x=np.zeros((10, 1, 8, 8), np.float32)), "has no array 'y'"),
    "shape": ("shape mismatch", lambda p: np.savez(p, x=np.zeros((10, 1, 9, 9), np.float32), y=np.zeros(10, int)),
              "samples are [1, 9, 9]"),
    "label": ("label out of range", lambda p: np.savez(p, x=np.zeros((10, 1, 8, 8), np.float32),
                                                        y=np.array([0] * 9 + [10])), "label 10"),
    "nan": ("NaN in x", lambda p: np.savez(p, x=np.full((10, 1, 8, 8), np.nan, np.float32), y=np.zeros(10, int)),
            "NaN/Inf"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_data_exit_2_before_the_device(tmp_path, capsys, kind):
    _, make, msg = BAD[kind]
    p = tmp_path / "bad.npz"
    make(p)
    code, err = _main(capsys, CNN, "--data", p, "--epochs", "1")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and msg in lines[0], err


def test_bad_checkpoints_exit_2(tmp_path, capsys):
    other = tmp_path / "other.pt"
    torch.save({"model": {"fc.weight": torch.zeros(3, 3)}}, other)
    code, err = _main(capsys, CNN, "--data", "digits", "--init", other)
    assert code == 2 and "is not a checkpoint of model 'TinyDigits'" in err, err
    code, err = _main(capsys, CNN, "--data", "digits", "--resume", other)
    assert code == 2 and "not an odl train checkpoint" in err, err
    code, err = _main(capsys, CNN, "--data", "digits", "--checkpoint", tmp_path / "no" / "such" / "dir" / "c.pt")
    assert code == 2 and "does not exist" in err, err
    f = tmp_path / "afile"
    f.write_text("")
    code, err = _main(capsys, CNN, "--data", "digits", "--checkpoint", f / "c.pt")   # below a file: unwritable
    assert code == 2 and "--checkpoint" in err, err
    code, err = _main(capsys, CNN, "--data", "digits", "--loss-scale", "128", "--precision", "fp32")
    assert code == 2 and "mixed only" in err, err


# ---- on the device --------------------------------------------------------------------------------------------
@needs_qemu
def test_digits_trains_on_qemu(tmp_path):
    """A few epochs of digits: the device tracks the PyTorch reference, the forward-only evaluation agrees with the
    host's accuracy of the checkpoint, which loads strictly into the nn.Module."""
    from odl.frontend.trace import load_model
    from odl.train.loop import host_eval, train
    from odl.train import data
    ck, js, png = tmp_path / "c.pt", tmp_path / "r.json", tmp_path / "r.png"
    rep = train(CNN, _opts(data="digits", epochs=2, batch=48, cores=8, checkpoint=str(ck), json_path=str(js),
                           png=str(png)), log=lambda *a: None)
    j = json.loads(js.read_text())
    for k in ("model", "precision", "cores", "epochs", "final", "checkpoint", "samples_per_s", "device_cycles_per_step"):
        assert k in j
    assert [e["epoch"] for e in j["epochs"]] == [1, 2]
    for e in j["epochs"]:
        assert {"train_loss", "val_acc", "ref_train_loss", "ref_val_acc", "wall_s"} <= set(e)
        assert abs(e["train_loss"] - e["ref_train_loss"]) < 0.02 * e["ref_train_loss"] + 1e-3
    f = j["final"]
    assert rep["final"]["val_acc"] == f["val_acc"] and rep["epochs"][-1]["train_loss"] == j["epochs"][-1]["train_loss"]
    assert f["val_acc"] > 0.85 and abs(f["val_acc"] - f["ref_val_acc"]) <= 0.02
    assert png.stat().st_size > 1000
    c = torch.load(ck, weights_only=True)
    assert (c["epoch"], c["step"]) == (2, 2 * 30)          # 1437 = 29 x 48 + 45: the remainder batch trains too
    m = load_model(CNN)
    m.load_state_dict(c["model"], strict=True)
    ds = data.load("digits", "xent", 0.2, 0)
    assert c["odl"]["normalize"] == ds.normalize
    acc, _ = host_eval(m, ds.x_val, ds.y_val, "xent")
    assert abs(acc - f["val_acc"]) <= 0.005 and acc == f["host_val_acc"]
    assert c["optimizer"]["param_groups"][0]["momentum"] == 0.9
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    opt.load_state_dict(c["optimizer"])                  # the optimizer state loads into torch.optim


def _run_and_resume(tmp_path, precision, data_path, stop_steps):
    from odl.train.loop import train
    full, part = tmp_path / "full.pt", tmp_path / "part.pt"
    kw = dict(data=str(data_path), epochs=2, batch=16, cores=8, precision=precision, reference="none")
    train(CNN, _opts(checkpoint=str(full), **kw), log=lambda *a: None)
    # killed mid-epoch 2 (the emulator killed, no EXIT, no report), then resumed from the epoch-1 checkpoint
    rep = train(CNN, _opts(checkpoint=str(part), stop_after_steps=stop_steps, **kw), log=lambda *a: None)
    assert rep["stopped"] and torch.load(part, weights_only=True)["epoch"] == 1
    train(CNN, _opts(checkpoint=str(part), resume=str(part), **kw), log=lambda *a: None)
    a, b = torch.load(full, weights_only=True), torch.load(part, weights_only=True)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 2 * 6)
    assert torch.equal(a["odl"]["device"], b["odl"]["device"])        # every device byte: weights, state, scale
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    return a


@needs_qemu
@pytest.mark.parametrize("precision", ["fp32", "mixed"])
def test_resume_after_kill_is_bitwise(tmp_path, precision):
    npz = _digits_npz(tmp_path / "d.npz", n=120)                      # 96 train / 24 val: 6 steps per epoch
    a = _run_and_resume(tmp_path, precision, npz, stop_steps=8)
    if precision == "mixed":
        assert a["odl"]["ctl"]["scale"] > 0 and a["odl"]["precision"] == "mixed"


@needs_qemu
@pytest.mark.slow
def test_resume_after_killing_the_process(tmp_path):
    """The odl process (and its emulator) killed by a signal as soon as its first checkpoint is written, in the
    next epoch (an epoch of this run takes well under a second on the emulator's fast path: a fixed wait for "mid
    epoch 2" let the whole run finish first); the resumed run ends bitwise equal."""
    npz = _digits_npz(tmp_path / "d.npz", n=400)
    full, part = tmp_path / "full.pt", tmp_path / "part.pt"
    epochs = 4
    base = [CNN, "--data", npz, "--epochs", str(epochs), "--batch", "16", "--reference", "none", "--no-progress",
            "--lr", "0.05", "--momentum", "0.9"]
    r = _cli(*base, "--checkpoint", full)
    assert r.returncode == 0, r.stderr
    p = subprocess.Popen([sys.executable, "-m", "odl.cli.main", "train", *map(str, base), "--checkpoint", str(part)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not part.exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.02)
        assert p.poll() is None, "finished before it could be killed"
        os.killpg(p.pid, signal.SIGKILL)                  # odl and its QEMU (same new session)
    finally:
        p.wait(timeout=30)
        p.stdout.close()
    assert torch.load(part, weights_only=True)["epoch"] == 1          # killed in epoch 2
    r = _cli(*base, "--checkpoint", part, "--resume", part)
    assert r.returncode == 0, r.stderr
    a, b = torch.load(full, weights_only=True), torch.load(part, weights_only=True)
    assert torch.equal(a["odl"]["device"], b["odl"]["device"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@needs_qemu
def test_fn_data_and_flat_npz_over_the_uart(tmp_path):
    """file.py:fn data (a torch Dataset), and N,F data with every batch sent over the protocol as with a board."""
    from odl.train.loop import train
    rep = train(CNN, _opts(data=f"{MODELS / 'digits_data.py'}:dataset", epochs=1, batch=16, val_split=0.25),
                log=lambda *a: None)
    assert rep["train_samples"] == 120 and rep["final"]["val_acc"] is not None
    assert abs(rep["epochs"][0]["train_loss"] - rep["epochs"][0]["ref_train_loss"]) < 1e-3
    npz = _digits_npz(tmp_path / "f.npz", n=100, flat=True, val=True)
    rep = train(MLP, _opts(data=str(npz), epochs=1, batch=16, device=DeviceOptions(bulk="uart"), cores=1), log=lambda *a: None)
    assert rep["time"]["path"] == "samples by WRITE" and rep["train_samples"] == 100
    assert abs(rep["epochs"][0]["train_loss"] - rep["epochs"][0]["ref_train_loss"]) < 1e-4
    assert rep["final"]["val_acc"] == pytest.approx(rep["final"]["host_val_acc"], abs=1e-6)


@needs_qemu
def test_mse_targets(tmp_path):
    """--loss mse with float targets: the evaluation program returns the outputs, the device's validation loss is
    set beside the reference's."""
    from odl.train.loop import train
    from sklearn.datasets import load_digits
    d = load_digits()
    x = d.images[:80].reshape(80, 64).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[d.target[:80]]
    npz = tmp_path / "r.npz"
    np.savez(npz, x=x, y=y)
    rep = train(MLP, _opts(data=str(npz), epochs=2, batch=16, loss="mse", lr=0.1, momentum=0.0, cores=2),
                log=lambda *a: None)
    e = rep["epochs"][-1]
    assert e["val_acc"] is None and e["val_loss"] is not None
    assert abs(e["train_loss"] - e["ref_train_loss"]) < 1e-4 * e["ref_train_loss"] + 1e-6
    assert abs(e["val_loss"] - rep["final"]["host_val_loss"]) < 1e-5


@needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize("model,shape,classes", [("resnet8", (3, 32, 32), 10), ("dscnn", (1, 49, 10), 12)])
def test_builtin_models_train_a_few_steps(tmp_path, model, shape, classes):
    from odl.train.loop import train
    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, x=rng.standard_normal((3, *shape)).astype(np.float32), y=rng.integers(0, classes, 3),
             x_val=rng.standard_normal((2, *shape)).astype(np.float32), y_val=rng.integers(0, classes, 2))
    # mixed precision at batch 2 (FP16 weights + FP32 masters fit the 1.5 MiB budget beside ResNet8's activations)
    rep = train(model, _opts(data=str(npz), epochs=1, batch=2, precision="mixed", lr=0.01, momentum=0.0),
                log=lambda *a: None)
    e = rep["epochs"][0]
    assert np.isfinite(e["train_loss"]) and abs(e["train_loss"] - e["ref_train_loss"]) < 0.05 * e["ref_train_loss"]
    assert rep["steps"] == 2                                # a batch of 2 and the remainder of 1


@needs_qemu
def test_train_on_a_serial_board(tmp_path):
    """`--port URL --flash CMD`: a QEMU booted by the flash command with nothing but its UART stands in for a board;
    the shared state, every batch, the evaluations and the checkpoints cross the framed protocol. Starts from
    --init weights, mixed precision with a fixed loss scale."""
    import shutil
    from helpers import free_port
    from odl.frontend.trace import load_model
    from odl.target.description import load_target
    port = free_port()
    t = load_target("rv32-cluster")
    q = t.qemu
    pidfile = tmp_path / "board.pid"
    board = (f"{shutil.which(q.binary)} -machine {q.machine} -cpu {q.cpu} -smp 3 {' '.join(q.extra)} "
             f"-serial tcp:127.0.0.1:{port},server=on,wait=off -kernel {{elf}} -daemonize -pidfile {pidfile} "
             f"-display none && sleep 0.5").replace("-nographic ", "")
    init = tmp_path / "init.pt"
    torch.manual_seed(5)
    torch.save(load_model(CNN).state_dict(), init)
    npz = _digits_npz(tmp_path / "d.npz", n=60, val=True)
    ck, js = tmp_path / "c.pt", tmp_path / "r.json"
    try:
        r = _cli(CNN, "--data", npz, "--epochs", "2", "--batch", "16", "--cores", "3", "--precision", "mixed",
                 "--loss-scale", "1024", "--init", init, "--checkpoint", ck, "--json", js,
                 "--port", f"socket://127.0.0.1:{port}", "--flash", board)
        assert r.returncode == 0, r.stdout + r.stderr
        # redirected (not a terminal): no progress-bar frames, one plain line per epoch
        assert "\r" not in r.stdout + r.stderr
        assert re.findall(r"^epoch +(\d+/\d+):", r.stdout, re.M) == ["1/2", "2/2"]
    finally:
        kill_pidfile(pidfile)
    j = json.loads(js.read_text())
    assert j["time"]["path"] == "samples by WRITE" and j["train_samples"] == 60 and j["val_samples"] == 40
    e = j["epochs"][0]
    assert abs(e["train_loss"] - e["ref_train_loss"]) < 0.02 * e["ref_train_loss"]
    assert j["final"]["val_acc"] == pytest.approx(j["final"]["host_val_acc"], abs=1e-6)
    c = torch.load(ck, weights_only=True)
    assert c["odl"]["ctl"]["scale"] == 1024.0 and c["step"] == 2 * 4
    m = load_model(CNN)
    m.load_state_dict(c["model"], strict=True)


@needs_qemu
def test_dynamic_loss_scale_skips_and_halves(tmp_path, monkeypatch):
    """A start scale far above what FP16 holds: the device finds Inf gradients itself, skips those updates and halves
    the scale until it fits, then doubles it after each run of clean steps (interval shortened to 4 here)."""
    import odl.resident as R
    import odl.train.loop as T
    monkeypatch.setattr(R, "SCALE_INIT", 2.0 ** 24)
    monkeypatch.setattr(R, "SCALE_INTERVAL", 4)
    npz = _digits_npz(tmp_path / "d.npz", n=200)                       # 10 steps per epoch
    ck = tmp_path / "c.pt"
    rep = T.train(CNN, _opts(data=str(npz), epochs=2, batch=16, precision="mixed", checkpoint=str(ck)),
                  log=lambda *a: None)
    ctl = torch.load(ck, weights_only=True)["odl"]["ctl"]
    # 2^24 x a loss gradient of ~1/16 already overflows FP16 (max 65504): the first steps are skipped
    assert rep["skipped_updates"] == ctl["skipped"] >= 5
    assert ctl["updates"] + ctl["skipped"] == ctl["step"] == rep["steps"] == 20 and ctl["updates"] >= 8
    assert ctl["scale"] < 2.0 ** 24 and ctl["scale"] == 2.0 ** round(np.log2(ctl["scale"]))
    assert ctl["clean"] < 4
    c = torch.load(ck, weights_only=True)
    assert all(torch.isfinite(v.float()).all() for v in c["model"].values())
    # the host reference skips the same updates (it follows the device's flag, as GradScaler would its own), so the
    # two stay on one trajectory through the skips
    for e in rep["epochs"]:
        assert abs(e["train_loss"] - e["ref_train_loss"]) < 0.01 * e["ref_train_loss"], rep["epochs"]
    assert round(rep["final"]["val_acc"] * 40) == round(rep["final"]["ref_val_acc"] * 40)


@needs_qemu
def test_adam_mixed_tracks_the_reference(tmp_path):
    """Adam on FP32 master weights (bias corrections from the device's update count) against torch.optim.Adam."""
    from odl.train.loop import train
    npz = _digits_npz(tmp_path / "d.npz", n=120)
    rep = train(CNN, _opts(data=str(npz), epochs=1, batch=16, precision="mixed", optimizer="adam", lr=0.01,
                           momentum=0.0), log=lambda *a: None)
    e = rep["epochs"][0]
    assert abs(e["train_loss"] - e["ref_train_loss"]) < 1e-3 * e["ref_train_loss"]
