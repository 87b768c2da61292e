"""odl fleet: FedAvg over emulated devices on digits, on the process pool and on Ray; sharding and averaging."""
import json

import numpy as np
import pytest
import torch

from helpers import MODELS, needs_qemu
from odl.common.errors import OdlError
from odl.train.fleet import FleetOptions, fedavg, fleet, shard
from odl.ir.program import TrainConfig

TINY = f"{MODELS / 'digits_cnn.py'}:TinyDigits"


def test_shards_cover_the_data_once():
    y = np.repeat(np.arange(10), 13)
    for split in ("iid", "label"):
        parts = shard(y, 4, split, seed=3)
        allidx = np.sort(np.concatenate(parts))
        assert (allidx == np.arange(len(y))).all() and max(map(len, parts)) - min(map(len, parts)) <= 1
    by_label = shard(y, 5, "label", seed=3)
    assert all(len(set(y[p])) <= 3 for p in by_label)          # a device sees a few classes only
    with pytest.raises(OdlError, match="--devices 200"):
        shard(y, 200, "iid", 0)


def test_fedavg_weights_by_samples():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 8.0]), "n": torch.tensor(5)}
    out = fedavg([a, b], [1, 2])
    assert torch.allclose(out["w"], torch.tensor([3.0, 6.0])) and int(out["n"]) == 3


def test_fedprox_settings_are_checked():
    with pytest.raises(OdlError, match="--optimizer sgd"):
        fleet(TINY, FleetOptions(strategy="fedprox", cfg=TrainConfig(optimizer="adam")), log=lambda s: None)
    with pytest.raises(OdlError, match="--mu"):
        fleet(TINY, FleetOptions(strategy="fedprox", mu=-1.0), log=lambda s: None)


def test_fleet_refuses_what_train_refuses(capsys):
    """A model that does not take the data's samples, or too many cores, is refused in one line (exit 2) before any
    device starts, as odl train refuses it: fleet makes train's checks."""
    from odl.cli.main import main
    assert main(["fleet", "resnet8", "--data", "digits", "--devices", "2", "--rounds", "1"]) == 2
    assert "samples are [1, 8, 8] but the model takes [3, 32, 32]" in capsys.readouterr().err
    with pytest.raises(OdlError, match="--cores 9: target rv32-cluster has 8 harts"):
        fleet(TINY, FleetOptions(cores=9), log=lambda s: None)


@needs_qemu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_proximal_term_on_the_device_matches_pytorch(precision):
    """The device's FedProx update (mu * (w - w_start) added inside SGD, with and without momentum) against
    PyTorch over 3 steps: the term moves the final weights by ~1e-2 relative here, far above the tolerance."""
    from odl.verify.validate import validate
    for mom in (0.0, 0.9):
        rep = validate(f"{MODELS / 'spine_model.py'}:SpineNet", precision=precision, cores=3, input_shape="2x3x7x8",
                       steps=3, cfg=TrainConfig(lr=0.1, momentum=mom, prox_mu=0.5), log=lambda s: None)
        assert rep["passed"], [(t["name"], t["kind"], t["rel_l2"]) for t in rep["tensors"] if not t["passed"]]
        assert any(t["kind"] == "param_final" for t in rep["tensors"])


@needs_qemu
@pytest.mark.parametrize("engine, strategy", [("local", "fedavg"), ("ray", "fedprox")])
def test_fleet_of_three_devices_on_digits(tmp_path, engine, strategy):
    if engine == "ray":
        pytest.importorskip("ray")
    opts = FleetOptions(data="digits", devices=3, rounds=2, local_epochs=1, engine=engine, jobs=2, cores=2,
                        strategy=strategy, mu=0.01,
                        cfg=TrainConfig(lr=0.05, momentum=0.9), centralized=engine == "local",
                        json_path=str(tmp_path / "f.json"), png=str(tmp_path / "f.png"))
    rep = fleet(TINY, opts, log=lambda s: None)
    assert [r["round"] for r in rep["rounds"]] == [1, 2]
    assert all(r["devices_ok"] == [0, 1, 2] and not r["devices_failed"] for r in rep["rounds"])
    assert sum(rep["shard_samples"]) == 1437
    # the global model learns: far above chance (10%) after two rounds, and better than the initial model
    assert rep["rounds"][-1]["val_acc"] > max(0.5, rep["initial_val_acc"])
    if engine == "local":
        assert rep["centralized"] and len(rep["centralized"]) == 2
    assert json.loads((tmp_path / "f.json").read_text())["final"]["val_acc"] == rep["final"]["val_acc"]
    assert (tmp_path / "f.png").stat().st_size > 0
