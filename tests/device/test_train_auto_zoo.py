"""`odl train` of a timm MobileNetV3-Small-0.5 (random init, 10 classes) with --train auto on 3x32x32 images
(scikit-learn's digits scaled up), mixed precision at a fixed loss scale: the chosen sparse update fits the whole
training firmware, and the device's validation accuracy equals the FP32 host reference's on the same batches after
every epoch. (With the dynamic scale the reference skips the updates the device skipped; the train losses then agree
to 0.04 %, and the accuracies to a sample of 80: docs/frontend.md.) Slow: ~6 minutes."""
import importlib.util

import numpy as np
import pytest

from helpers import needs_qemu

pytestmark = [needs_qemu, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed")]


def test_mobilenetv3_small_050_trains_with_auto_update(tmp_path, capsys):
    from sklearn.datasets import load_digits
    from odl.lower.lowering import TrainConfig
    from odl.train.loop import TrainOptions, train
    d = load_digits()
    x = np.repeat(np.kron(d.images.astype(np.float32) / 16.0, np.ones((4, 4), np.float32))[:, None], 3, axis=1)
    idx = np.random.default_rng(0).permutation(len(x))
    tr, va = idx[:320], idx[320:400]
    data = tmp_path / "digits32.npz"
    np.savez(data, x=x[tr], y=d.target[tr], x_val=x[va], y_val=d.target[va])
    opts = TrainOptions(cfg=TrainConfig(lr=0.05, train="auto"), data=str(data), epochs=2, batch=8, precision="mixed",
                        loss_scale="128", progress=False)
    rep = train("timm:mobilenetv3_small_050", opts, log=lambda *a: None)
    err = capsys.readouterr().err
    assert "--train auto:" in err and "step arena" in err
    for e in rep["epochs"]:
        assert round(e["val_acc"] * 80) == round(e["ref_val_acc"] * 80), rep["epochs"]   # samples right of 80
        assert abs(e["train_loss"] - e["ref_train_loss"]) < 0.01 * e["ref_train_loss"]
    assert rep["final"]["val_acc"] > 0.15     # it learns (10 classes: chance is 0.10)
