"""`odl compile --deploy int8` on QEMU: DigitsCNN's int8 program from a QAT checkpoint (made on the host in a few
seconds, tests/models/qat_checkpoints.py) against the host fake-quant model in evaluation (torch's FakeQuantize
modules with the checkpoint's observers), sample by sample: the logits' int8 codes and the argmax; DS-CNN's against the
host build of the same program, bit for bit."""
import json
import subprocess
import sys

import numpy as np
import torch

from helpers import MODELS, needs_qemu
from odl.deploy.int8 import host as int8_host
from odl.deploy.int8.lower import lower
from odl.deploy.int8.plan import plan
from odl.deploy.int8.project import compile_int8
from odl.deploy.int8.qat_checkpoint import fake_quant_model, read
from odl.pipeline import prepare

sys.path.insert(0, str(MODELS))
import qat_checkpoints  # noqa: E402
from digits_cnn import DigitsCNN  # noqa: E402

N = 96


def _app(x: np.ndarray) -> str:
    """int main(void): odl_predict on every compiled-in raw sample, each logit's FP32 bits in hex"""
    vals = ",\n".join(", ".join(f"{float(v).hex()}f" for v in s) for s in x.reshape(len(x), -1))
    return (f'#include "odl.h"\nstatic const float xs[{len(x)}][ODL_INPUT_SIZE] = {{\n{vals}\n}};\n'
            "int main(void) {\n  float lg[ODL_OUTPUT_SIZE];\n  if (odl_init() != ODL_OK) return 1;\n"
            f"  for (int i = 0; i < {len(x)}; i++) {{\n    odl_status s = odl_predict(xs[i], lg);\n"
            '    printf("L %d %d", i, (int)s);\n'
            '    for (int k = 0; k < ODL_OUTPUT_SIZE; k++) printf(" %x", *(const unsigned *)&lg[k]);\n'
            '    printf("\\n");\n  }\n  return 0;\n}\n')


def run_device(proj, x, tmp_path) -> np.ndarray:
    app = tmp_path / "agree.c"
    app.write_text(_app(x))
    r = subprocess.run(["make", "-s", "-C", str(proj), "run", f"APP={app}"], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("L ")]
    assert not (proj / "flash.img").exists()         # an inference build has no flash store
    assert [int(t[1]) for t in rows] == list(range(len(x))) and all(t[2] == "0" for t in rows)
    return np.array([[int(h, 16) for h in t[3:]] for t in rows], np.uint32).view(np.float32)


def codes(logits: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """the int8 logits' quint8 codes back from their dequantized values (exact: (q - zp) * scale in FP32)"""
    q = np.rint(logits / np.float32(scale)).astype(np.int64) + zp
    assert np.array_equal((q - zp).astype(np.float32) * np.float32(scale), logits)
    return q


@needs_qemu
def test_digits_cnn_int8_agrees_with_fake_quant_model(tmp_path):
    ck_path, proj = tmp_path / "qat.pt", tmp_path / "proj"
    torch.manual_seed(0)
    model = DigitsCNN()
    xn, _, norm = qat_checkpoints.make(model, ck_path)
    info = compile_int8(f"{MODELS / 'digits_cnn.py'}:DigitsCNN", proj, str(ck_path), log=lambda *a: None)
    assert info["notes"] == []
    x_raw = (xn[:N] * norm["std"][0] + norm["mean"][0]).numpy().astype(np.float32)   # what a sensor gives
    dev = run_device(proj, x_raw, tmp_path)

    host_model = DigitsCNN()
    net = fake_quant_model(host_model, read(str(ck_path), host_model, "DigitsCNN"), (1, 8, 8))
    x_host = (torch.from_numpy(x_raw) - norm["mean"][0]) / norm["std"][0]      # the host's normalisation
    with torch.no_grad():
        net(x_host)                    # the weight observers take the current weights' ranges (as odl_predict's)
        host = net(x_host).numpy()
    out = json.loads((proj / "src" / "int8.json").read_text())["tensors"]["addmm"]
    s, zp = out["scale"], out["zp"] + 128
    qd, qh = codes(dev, s, zp), codes(host, s, zp)
    flips = int((qd != qh).sum())
    argmax_diff = int((dev.argmax(1) != host.argmax(1)).sum())
    print(f"int8 vs fake-quant: {flips} of {qd.size} logit codes differ (max {np.abs(qd - qh).max()}), "
          f"argmax differs on {argmax_diff} of {N} samples")
    # the device runs the host build's kernels' program bit for bit (the codes and FP32 logits)
    prep = prepare(f"{MODELS / 'digits_cnn.py'}:DigitsCNN", "1x1x8x8", 0, "fp32")
    P = lower(prep.graph, prep.model, read(str(ck_path), prep.model, "DigitsCNN"), "DigitsCNN")
    arena = plan(P)
    on_host = np.stack([int8_host.run(P, x_host[i:i + 1].numpy(), arena)["logits"] for i in range(N)])
    assert np.array_equal(on_host.view(np.uint32), dev.view(np.uint32))
    assert np.abs(qd - qh).max() <= 1
    assert flips <= qd.size // 50
    assert argmax_diff <= 1


@needs_qemu
def test_int8_from_l2_gives_the_l1_layouts_logits(tmp_path):
    """A model whose arena and staging buffer do not fit L1 keeps the arena in L2 and reads the constants in place
    (no DMA): forced here with an L1 budget of 0, the same codes as the L1 layout, bit for bit"""
    ck_path = tmp_path / "qat.pt"
    torch.manual_seed(0)
    xn, _, norm = qat_checkpoints.make(DigitsCNN(), ck_path, float_steps=5, qat_steps=3)
    x_raw = (xn[:4] * norm["std"][0] + norm["mean"][0]).numpy().astype(np.float32)
    out = {}
    for name, budget in (("l1", None), ("l2", 0)):
        info = compile_int8(f"{MODELS / 'digits_cnn.py'}:DigitsCNN", tmp_path / name, str(ck_path),
                            log=lambda *a: None, l1_budget=budget)
        assert info["memory"] == name and (info["stage_bytes"] > 0) == (name == "l1")
        (tmp_path / name / "x").mkdir()
        out[name] = run_device(tmp_path / name, x_raw, tmp_path / name / "x")
    assert "odl_dma_start" not in (tmp_path / "l2" / "src" / "odl_model.c").read_text()
    assert np.array_equal(out["l1"].view(np.uint32), out["l2"].view(np.uint32))


@needs_qemu
def test_dscnn_int8_device_equals_host_build(tmp_path):
    """DS-CNN (QAT a few steps on random data): the target's kernels (the depthwise blocks of whole planes, the gemm
    and pooling in RVV) give the host build's logits bit for bit, 4 samples"""
    from odl.frontend.trace import load_model
    ck_path, proj, shape = tmp_path / "ds.pt", tmp_path / "proj", (1, 49, 10)
    torch.manual_seed(0)
    xn, _, norm = qat_checkpoints.make(load_model("dscnn"), ck_path, float_steps=5, qat_steps=3, batch=8,
                                       data=qat_checkpoints.random_data(shape, classes=12))
    compile_int8("dscnn", proj, str(ck_path), log=lambda *a: None)
    x_raw = (xn[:4] * norm["std"][0] + norm["mean"][0]).numpy().astype(np.float32)
    dev = run_device(proj, x_raw, tmp_path)
    prep = prepare("dscnn", "1x1x49x10", 0, "fp32")
    P = lower(prep.graph, prep.model, read(str(ck_path), prep.model, prep.name), prep.name)
    arena = plan(P)
    x_host = (torch.from_numpy(x_raw) - norm["mean"][0]) / norm["std"][0]
    on_host = np.stack([int8_host.run(P, x_host[i:i + 1].numpy(), arena)["logits"] for i in range(len(x_raw))])
    assert np.array_equal(on_host.view(np.uint32), dev.view(np.uint32))
    assert len(np.unique(dev)) > 8                   # logits that differ: not a constant program


@needs_qemu
def test_int8_predict_under_the_timing_model(tmp_path):
    """odl.embed.bench --timed: the int8 bench app's marked odl_predict is one step of the timing model; its cycles
    are fewer than all harts' instructions (8 harts in parallel) and more than the critical path's instructions, and
    the bench's instruction-clock figure is that same step's instructions of all harts (within 1%: the two clocks
    are read at slightly different places) plus the instructions of QEMU's stand-in DMA engine, which copies each
    layer's constants into L1 (charged to no hart by the timing model, which times the transfers instead)."""
    from odl.embed.bench import measure_int8
    ck_path = tmp_path / "qat.pt"
    torch.manual_seed(0)
    qat_checkpoints.make(DigitsCNN(), ck_path, float_steps=5, qat_steps=3)
    rep = measure_int8(f"{MODELS / 'digits_cnn.py'}:DigitsCNN", str(ck_path), tmp_path, timed=True)
    t = rep["predict_timed_cycles"]
    raw = json.loads((tmp_path / "timed" / "timing.json").read_text())
    assert raw["steps"] == 1 and raw["cycles"] == t
    assert raw["instructions_critical"] < t < raw["instructions_all_harts"]
    info = json.loads((tmp_path / "digits_cnn.py-DigitsCNN-int8" / "src" / "int8.json").read_text())
    assert info["memory"] == "l1" and raw["dma"]["bytes"] == rep["weight_bytes"] > 0   # every constant staged once
    copy = rep["predict_cycles"] - raw["instructions_all_harts"]
    assert -0.01 * rep["predict_cycles"] <= copy <= 0.01 * rep["predict_cycles"] + 2 * raw["dma"]["bytes"]
