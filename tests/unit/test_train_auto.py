"""--train auto (odl/plan/sparse.py): the largest update nearest the output that the planner fits in the budget,
reproducible, reported with its bytes; refused with the bytes over when nothing fits (validated on QEMU: tests/models/test_train_auto_qemu.py)."""
import dataclasses

import pytest

from helpers import MODELS
from odl.common.errors import OdlError
from odl.frontend.export import trace_export
from odl.lower.lowering import TrainConfig, lower
from odl.pipeline import fit
from odl.plan.planner import plan
from odl.plan.sparse import choose, spec_for
from odl.common.userfile import import_file


@pytest.fixture(scope="module")
def graph():
    m = import_file(str(MODELS / "ops_models.py"), "m").ConvBNStack()
    return trace_export(m, (3, 3, 7, 7))


def _arena(graph, names):
    return plan(lower(graph, "fp32", TrainConfig(train=spec_for(names)))).arena_bytes


def test_chooses_the_last_layers_that_fit(graph):
    budget = 26000
    names, rep = choose(graph, "fp32", TrainConfig(), budget)
    layers = [n for n in graph.nodes if n.params][::-1]
    k = len(rep["full_layers"])
    assert rep["full_layers"] == [n.report_name for n in layers[:k]] and k >= 1
    assert set(names) >= {p for n in layers[:k] for p in n.params.values()}
    assert rep["arena_bytes"] == _arena(graph, names) <= budget
    # maximal: one more whole layer does not fit
    more = names + list(layers[k].params.values())
    assert _arena(graph, more) > budget
    assert rep["trainable_bytes"] == 4 * rep["trainable_params"]
    assert rep["frozen_bytes"] == 4 * sum(
        __import__("math").prod(s) for p, s in graph.params.items() if p not in names)
    # reproducible
    assert choose(graph, "fp32", TrainConfig(), budget) == (names, rep)


def test_biases_further_back_when_whole_layers_stop(graph):
    # a budget between "the head" and "everything": whole layers first, then 1-d parameters further back
    full_all = _arena(graph, list(graph.params))
    names, rep = choose(graph, "fp32", TrainConfig(), full_all - 1)
    assert rep["arena_bytes"] <= full_all - 1 and set(names) != set(graph.params)
    vec = [p for p in names if len(graph.params[p]) == 1]
    assert vec and all(p in names for p in vec)


def test_refused_when_nothing_fits(graph):
    with pytest.raises(OdlError, match=r"not even the smallest update \(head.bias\) fits: its step needs \d+ B, over "
                                       r"the budget of 20000 B by \d+ B"):
        choose(graph, "fp32", TrainConfig(), 20000)


def test_fit_resolves_auto(graph):
    cfg, prog, mem = fit(graph, "fp32", TrainConfig(train="auto"), 26000)
    assert cfg.train.startswith("^(") and mem.auto["arena_bytes"] <= 26000
    assert sorted(prog.trainable) == sorted(mem.auto["trainable"])
    with pytest.raises(OdlError, match="resolved to parameter names"):
        lower(graph, "fp32", dataclasses.replace(cfg, train="auto"))
