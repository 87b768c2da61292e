"""--qat int8 on QEMU: a training step with fake quantization validated tensor by tensor against torch's
FakeQuantize modules (observer state included), and (slow) digits training with the observers in the checkpoint."""
import json

import pytest
import torch

from helpers import MODELS, check_report, needs_qemu
from odl.lower.lowering import TrainConfig
from odl.verify.validate import validate


def check_qat(rep, points):
    check_report(rep)
    q = rep["qat"]
    assert q["points"] == points and not q["mismatches"] and not q["unobservable"]
    states = {t["name"] for t in rep["tensors"] if t["kind"] == "state_updated"}
    assert {"qat.input.scale", "qat.input.min_val"} <= states
    return q


@needs_qemu
def test_tinycnn_fp32():
    """FP32: the device's fake quantization is torch's bit for bit; codes flip only at rounding boundaries."""
    q = check_qat(validate("tinycnn", precision="fp32", cfg=TrainConfig(qat="int8"), log=lambda s: None), 4)
    assert q["max_code_diff"] <= 1


@needs_qemu
def test_tinycnn_per_layer():
    """--qat int8:^c1$|fc: c1's and fc's weights, the input point (c1 is the first layer) and both layers' outputs
    are fake-quantized; c2's weight and output are not, on the device and in torch's reference alike."""
    rep = validate("tinycnn", precision="fp32", cores=3, cfg=TrainConfig(qat="int8", qat_layers="^c1$|fc"),
                   log=lambda s: None)
    check_report(rep)
    q = rep["qat"]
    assert rep["config"]["qat"] == "int8:^c1$|fc" and q["points"] == 3 and not q["mismatches"]
    states = {t["name"].rsplit(".", 1)[0] for t in rep["tensors"] if t["name"].startswith("qat.")}
    assert states == {"qat.input", "qat.relu", "qat.addmm", "qat.c1.weight", "qat.fc.weight"}


@needs_qemu
@pytest.mark.slow
@pytest.mark.parametrize("precision, bn", [("fp16", "frozen"), ("fp32", "train")])
def test_digits_cnn(precision, bn):
    rep = validate(f"{MODELS / 'digits_cnn.py'}:DigitsCNN", precision=precision,
                   cfg=TrainConfig(qat="int8", bn=bn), log=lambda s: None)
    check_qat(rep, 4)


@needs_qemu
@pytest.mark.slow
def test_train_digits_checkpoint_holds_the_observers(tmp_path):
    """One epoch: the device's evaluation equals the checkpoint's on the host with the device's observers; the
    checkpoint keeps every observer's state and the scheme (what an int8 deploy builds on)."""
    from odl.train.loop import TrainOptions, train
    ck, js = tmp_path / "c.pt", tmp_path / "r.json"
    opts = TrainOptions(data="digits", epochs=1, batch=32, checkpoint=str(ck), json_path=str(js), progress=False,
                        cfg=TrainConfig(lr=0.05, momentum=0.9, qat="int8"))
    train(f"{MODELS / 'digits_cnn.py'}:TinyDigits", opts, log=lambda *a: None)
    f = json.loads(js.read_text())["final"]
    assert abs(f["val_acc"] - f["host_val_acc"]) < 1e-6 and f["val_acc"] > 0.5     # float32 mean on the host
    c = torch.load(ck, weights_only=True)
    q = c["odl"]["qat"]
    assert q["points"] == ["input", "relu", "addmm"] and q["quantized_weights"] == ["conv.weight", "fc.weight"]
    assert q["activations"]["qmax"] == 255 and q["weights"]["qmin"] == -128
    assert float(q["state"]["qat.relu.min_val"]) == 0.0 and float(q["state"]["qat.relu.scale"]) > 0
    assert q["state"]["qat.conv.weight.scale"].shape == (4,)


@needs_qemu
@pytest.mark.slow
def test_resume_with_observers_is_bitwise(tmp_path):
    """Killed mid-epoch and resumed from the epoch-1 checkpoint: the same device bytes (weights, observers) and
    the same reference observers as an uninterrupted run."""
    import numpy as np
    from sklearn.datasets import load_digits
    from odl.train.loop import TrainOptions, train
    d = load_digits()
    npz = tmp_path / "d.npz"
    np.savez(npz, x=d.images[:120].astype(np.float32)[:, None], y=d.target[:120].astype(np.int64))
    model = f"{MODELS / 'digits_cnn.py'}:TinyDigits"

    def run(ck, **kw):
        return train(model, TrainOptions(data=str(npz), epochs=2, batch=16, checkpoint=str(ck), progress=False,
                                         cfg=TrainConfig(lr=0.05, momentum=0.9, qat="int8"), **kw),
                     log=lambda *a: None)
    full, part = tmp_path / "full.pt", tmp_path / "part.pt"
    run(full)
    assert run(part, stop_after_steps=8)["stopped"]
    run(part, resume=str(part))
    a, b = torch.load(full, weights_only=True), torch.load(part, weights_only=True)
    assert torch.equal(a["odl"]["device"], b["odl"]["device"])
    for k, v in a["odl"]["qat"]["state"].items():
        assert torch.equal(v, b["odl"]["qat"]["state"][k]), k
    for k, v in a["odl"]["reference"]["qat"].items():
        assert torch.equal(v, b["odl"]["reference"]["qat"][k]), k
