"""odl sweep: spec checking, the same rows on the process pool and on Ray, resume, failures recorded."""
import json
import shutil
import sys

import pytest

from helpers import ROOT, needs_qemu
from odl.cli.main import command_options
from odl.jobs import sweep as sw
from odl.common.errors import OdlError

SPEC = f"""command = "validate"
[grid]
model = ["tinycnn", "{ROOT}/tests/models/shared_models.py:SharedTwice"]
precision = ["fp32", "fp16"]
[options]
cores = 2
"""


def _spec(tmp_path, text=SPEC):
    p = tmp_path / "spec.toml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text, msg", [
    ('command = "bench"\n[grid]\nmodel = ["tinycnn"]\n', "command must be one of"),
    ('command = "validate"\n[grid]\nprecision = ["fp32"]\n', "no model"),
    ('command = "validate"\n[grid]\nmodel = ["tinycnn"]\nlearning-rate = [0.1]\n', "'learning-rate' is not an option"),
    ('command = "validate"\n[grid]\nmodel = "tinycnn"\n', "must be a non-empty list"),
    ('command = "validate"\n[grid]\nmodel = ["tinycnn"]\n[options]\njson = "x.json"\n', "set by the sweep"),
    ('command = "validate"\n[grid\n', "not valid TOML"),
])
def test_bad_spec(tmp_path, text, msg):
    with pytest.raises(OdlError, match=msg):
        sw.load_spec(_spec(tmp_path, text), command_options)


def test_jobs_are_the_grid_with_stable_ids(tmp_path):
    spec = sw.load_spec(_spec(tmp_path), command_options)
    jobs = sw.jobs(spec)
    assert len(jobs) == 4 and len({j["job"] for j in jobs}) == 4
    assert sw.jobs(spec) == jobs
    a = sw.argv(jobs[0], "r.json")
    assert a[:4] == [sys.executable, "-m", "odl", "validate"] and a[-2:] == ["--json", "r.json"]
    assert "--cores" in a and "--precision" in a


def test_per_layer_formats_are_grid_values(tmp_path):
    """store / qat values with a layer pattern go to each job's command line as written."""
    spec = sw.load_spec(_spec(tmp_path, 'command = "profile"\n[grid]\nmodel = ["resnet8"]\n'
                                        'store = ["compute", "fp8:layer3", "fp8"]\n'), command_options)
    stores = [sw.argv(j, "r.json") for j in sw.jobs(spec)]
    assert sorted(a[a.index("--store") + 1] for a in stores) == ["compute", "fp8", "fp8:layer3"]


def test_failed_job_is_retried_once_and_recorded(monkeypatch):
    monkeypatch.setattr(sw, "argv", lambda job, p: [sys.executable, "-c",
                                                     "import sys; print('odl: tool broke', file=sys.stderr); sys.exit(3)"])
    row = sw.run_job({"job": "x", "command": "validate", "options": {"model": "m"}})
    assert row["status"] == "failed" and row["attempts"] == 2 and row["exit_code"] == 3
    assert row["error"] == "odl: tool broke"


@needs_qemu
def test_bad_input_is_recorded_not_retried(tmp_path):
    spec = _spec(tmp_path, 'command = "validate"\n[grid]\nmodel = ["tinycnn"]\n[options]\ninput-shape = "1x3x4x4"\n')
    rows = sw.sweep(spec, command_options, out_dir=str(tmp_path / "out"), n_jobs=1, log=lambda s: None)
    assert rows[0]["status"] == "failed" and rows[0]["exit_code"] == 2 and rows[0]["attempts"] == 1
    assert "input shape" in rows[0]["error"]


@needs_qemu
def test_local_and_ray_give_the_same_rows_and_resume_skips_finished(tmp_path):
    pytest.importorskip("ray")
    spec = _spec(tmp_path)
    local = sw.sweep(spec, command_options, engine="local", out_dir=str(tmp_path / "local"), n_jobs=2, log=lambda s: None)
    ray_rows = sw.sweep(spec, command_options, engine="ray", out_dir=str(tmp_path / "ray"), n_jobs=2, log=lambda s: None)

    def strip(r):
        return {k: v for k, v in r.items() if k not in ("wall_s", "grad_rel_l2")}
    assert [strip(r) for r in local] == [strip(r) for r in ray_rows]
    # a median over every parameter gradient: measured, SharedTwice fp32's differs between two runs of the same job
    # in the 12th digit (some non-worst tensor's rel-L2 does), while the worst tensor's is bitwise the same
    assert [r["grad_rel_l2"] for r in local] == pytest.approx([r["grad_rel_l2"] for r in ray_rows], rel=1e-9)
    assert all(r["status"] == "ok" and r["passed"] for r in local)
    assert {r["options"]["precision"] for r in local} == {"fp32", "fp16"}
    for name in ("results.csv", "results.json", "pareto.png"):
        assert (tmp_path / "local" / name).is_file()
    # validate jobs: the front is over the worst rel-L2 and the memory (no cycles); every finished row is ranked
    res = json.loads((tmp_path / "local" / "results.json").read_text())
    assert res["pareto_objectives"] == ["min grad_rel_l2", "min memory_bytes"]
    assert all(isinstance(r["pareto"], bool) for r in local) and any(r["pareto"] for r in local)
    best = min(local, key=lambda r: (r["memory_bytes"], r["grad_rel_l2"]))
    assert best["pareto"] is True
    # a sweep killed after three jobs: its results file holds three rows; --resume runs only the fourth
    out = tmp_path / "resumed"
    out.mkdir()
    data = json.loads((tmp_path / "local" / "results.json").read_text())
    data["rows"] = data["rows"][:3]
    (out / "results.json").write_text(json.dumps(data))
    with pytest.raises(OdlError, match="--resume"):
        sw.sweep(spec, command_options, out_dir=str(out), log=lambda s: None)
    logs = []
    rows = sw.sweep(spec, command_options, out_dir=str(out), resume=True, n_jobs=2, log=logs.append)
    assert "(3 already done)" in logs[0]
    assert rows[:3] == data["rows"] and strip(rows[3]) == strip(local[3])
    shutil.rmtree(out)
