"""--train auto (odl/plan/sparse.py): the largest update nearest the output that the planner fits in the budget,
reproducible, reported with its bytes; refused with the bytes over and the largest update that fits (none: where the
smallest update's bytes go) when nothing fits; an explicit update over the budget is refused with --train auto's
choice (validated on QEMU: tests/models/test_train_auto_qemu.py)."""
import dataclasses
import math

import pytest

from helpers import MODELS
from odl.common.errors import OdlError
from odl.frontend.export import trace_export
from odl.lower.lowering import TrainConfig, lower
from odl.pipeline import fit
from odl.plan.planner import OverBudget, plan
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
                                       r"the budget of 20000 B by \d+ B") as e:
        choose(graph, "fp32", TrainConfig(), 20000)
    # with the largest update that fits, none, and where the smallest update's bytes go
    arena = _arena(graph, ["head.bias"])
    params = 4 * sum(math.prod(s) for s in graph.params.values())
    stats = 4 * 2 * (5 + 7 + 11)                     # running mean and variance of the three batch norms
    io = 4 * (3 * 3 * 7 * 7) + 4 * 3                 # input, labels
    assert str(e.value).endswith(
        f"its step needs {arena} B, over the budget of 20000 B by {arena - 20000} B; the largest update that fits: "
        f"none: of the smallest update's {arena} B, parameters {params} B, running statistics {stats} B, input and "
        f"labels {io} B, and {arena - params - stats - io} B activations, gradients and scratch at the peak")
    assert e.value.over == arena - 20000


def test_refused_when_the_parameters_alone_are_over(graph):
    params = 4 * sum(math.prod(s) for s in graph.params.values())
    with pytest.raises(OdlError) as e:
        choose(graph, "fp32", TrainConfig(), params - 100)
    assert str(e.value).endswith(f"the largest update that fits: none: the parameters alone "
                                 f"({params // 4} in fp32) take {params} B, over the budget by 100 B")


def test_explicit_update_over_budget_names_the_largest_that_fits(graph):
    # --train all over the budget: the refusal gives the bytes over and --train auto's choice within the budget
    budget = 26000
    names, rep = choose(graph, "fp32", TrainConfig(), budget)
    with pytest.raises(OverBudget) as e:
        fit(graph, "fp32", TrainConfig(train="all"), budget)
    full = _arena(graph, list(graph.params))
    msg = str(e.value)
    assert msg.startswith(f"the training step needs a {full}-byte arena, over the target's budget of {budget} "
                          f"bytes by {full - budget}; largest live buffers at the peak: ")
    assert msg.endswith(f"; the largest update that fits: --train auto's choice, {len(names)} tensors, "
                        f"{rep['trainable_params']} parameters ({rep['trainable_bytes']} B; frozen "
                        f"{rep['frozen_bytes']} B): all of {', '.join(rep['full_layers'])}; step arena "
                        f"{rep['arena_bytes']} B of {budget} B")
    assert e.value.over == full - budget
    # reproducible: the same message on every run
    with pytest.raises(OverBudget) as e2:
        fit(graph, "fp32", TrainConfig(train="all"), budget)
    assert str(e2.value) == msg


def test_explicit_update_over_budget_when_nothing_fits(graph):
    with pytest.raises(OverBudget) as e:
        fit(graph, "fp32", TrainConfig(train="last:1"), 20000)
    arena = _arena(graph, ["head.bias"])
    assert f"; the largest update that fits: none: of the smallest update's (head.bias) {arena} B, parameters " \
        in str(e.value)
    params = 4 * sum(math.prod(s) for s in graph.params.values())
    with pytest.raises(OverBudget) as e:
        fit(graph, "fp32", TrainConfig(train="all"), 3000)
    assert str(e.value).endswith(f"; the largest update that fits: none: the parameters alone ({params // 4} in "
                                 f"fp32) take {params} B, over the budget by {params - 3000} B (the smallest update, "
                                 f"head.bias, needs {arena} B)")


def test_fit_resolves_auto(graph):
    cfg, prog, mem = fit(graph, "fp32", TrainConfig(train="auto"), 26000)
    assert cfg.train.startswith("^(") and mem.auto["arena_bytes"] <= 26000
    assert sorted(prog.trainable) == sorted(mem.auto["trainable"])
    with pytest.raises(OdlError, match="resolved to parameter names"):
        lower(graph, "fp32", dataclasses.replace(cfg, train="auto"))
