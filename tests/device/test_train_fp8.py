"""`odl train --store fp8`: the resident training programs keep activations in E4M3 and inter-layer gradients in
E5M2 with delayed scaling; the amax histories live in the shared state, so they go into checkpoints and a resumed
run continues bitwise."""
import numpy as np
import pytest

from helpers import MODELS, needs_qemu

CNN = f"{MODELS / 'digits_cnn.py'}:TinyDigits"


def _opts(**kw):
    from odl.lower.lowering import TrainConfig
    from odl.train.loop import TrainOptions
    cfg = TrainConfig(lr=0.05, momentum=0.9, store="fp8")
    return TrainOptions(cfg=cfg, progress=False, precision="fp16", **kw)


@needs_qemu
@pytest.mark.slow
def test_fp8_trains_and_resumes_bitwise(tmp_path):
    import torch
    from odl.common.precision import FP8_HISTORY, FP8_STATE_HEAD
    from odl.train.loop import train
    from test_train import _digits_npz
    npz = _digits_npz(tmp_path / "d.npz", n=120)              # 96 train / 24 val: 6 steps per epoch
    full, part = tmp_path / "full.pt", tmp_path / "part.pt"
    kw = dict(data=str(npz), epochs=2, batch=16, cores=8)
    rep = train(CNN, _opts(checkpoint=str(full), **kw), log=lambda *a: None)
    for e in rep["epochs"]:
        assert abs(e["train_loss"] - e["ref_train_loss"]) < 0.15 * e["ref_train_loss"]
    a = torch.load(full, weights_only=True)
    assert a["odl"]["layout"] and any(name.startswith("fp8_state_") for name, *_ in a["odl"]["layout"])
    rep = train(CNN, _opts(checkpoint=str(part), stop_after_steps=8, reference="none", **kw), log=lambda *a: None)
    assert rep["stopped"]
    train(CNN, _opts(checkpoint=str(part), resume=str(part), reference="none", **kw), log=lambda *a: None)
    b = torch.load(part, weights_only=True)
    assert torch.equal(a["odl"]["device"], b["odl"]["device"])   # weights, statistics, momentum, amax histories
    # the histories moved: 12 steps pushed 12 recorded amax values in front of the 4 initial ones
    lay = {name: (off, n) for name, off, n in a["odl"]["layout"]}
    off, n = lay["fp8_state_e4m3"]
    rows = np.frombuffer(a["odl"]["device"].numpy().tobytes(), np.float32, n // 4, off).reshape(
        -1, FP8_STATE_HEAD + FP8_HISTORY)
    hist = rows[:, FP8_STATE_HEAD:]
    assert (rows[:, 0] > 0).all() and (hist > 0).all() and not np.all(hist == hist[:, :1])
