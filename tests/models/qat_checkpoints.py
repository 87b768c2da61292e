"""QAT checkpoints made cheaply on the host for the int8 deploy's tests: the model trained a few steps in float
(batch norm collects running statistics), then a few steps of quantization-aware training through the host's
fake-quant model (torch's FakeQuantize modules at odl's points, batch norm frozen), written in `odl train --qat int8
--qat-bn frozen`'s checkpoint format (odl.qat holds the observers under the device's point names)."""
import torch

from odl.frontend.trace import trace
from odl.lower.ops import fakequant as fqmod
from odl.lower.ops.fakequant_torch import QatModel
from odl.train.qat import qat_entry, renamed


def digits(n=None):
    """scikit-learn's 8x8 digits, raw (0..16), and their normalisation (one channel)"""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images[:n], dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target[:n], dtype=torch.int64)
    return x, y, {"mean": [float(x.mean())], "std": [float(x.std())]}


def _steps(net, x, y, steps, lr, batch, gen):
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        i = torch.randint(0, len(x), (batch,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[i]), y[i]).backward()
        opt.step()


def random_data(shape, classes=10, n=256, seed=0):
    """n random samples of `shape` (per sample) with labels: for the figures of models without their data set"""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    return x, torch.randint(0, classes, (n,), generator=g), {"mean": [0.0], "std": [1.0]}


def make(model, path, float_steps=60, qat_steps=30, batch=32, seed=0, data=None):
    """Train `model` (in place) on `data` ((x raw, y, normalize); default: digits) and write its QAT checkpoint to
    `path`; returns (x_norm, y, normalize)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y, norm = data or digits()
    xn = (x - norm["mean"][0]) / norm["std"][0]
    model.train()
    _steps(model, xn, y, float_steps, 0.05, batch, gen)
    shape = (batch, *x.shape[1:])
    dev = [fqmod.point_of(g, v) for g in [trace(model, shape)] for v in fqmod.points(g)]
    gfx = trace(model, shape, frontend="fx")
    ref = [fqmod.point_of(gfx, v) for v in fqmod.points(gfx)]
    net = QatModel(model, gfx).train()
    for m in model.modules():                  # --qat-bn frozen: batch norm on its running statistics
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    _steps(net, xn, y, qat_steps, 0.02, batch, gen)
    state = {k: v.float() for k, v in renamed(net.qat.state(), dict(zip(ref, dev))).items()}
    entry = qat_entry("int8", "frozen", dev, fqmod.weights(gfx), state)
    torch.save({"model": model.state_dict(), "optimizer": {}, "epoch": 0, "step": float_steps + qat_steps,
                "odl": {"version": 1, "model": type(model).__name__, "normalize": norm, "qat": entry}}, path)
    return xn, y, norm
