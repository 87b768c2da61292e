"""Per-layer format choices: `--store fp8:REGEX` and `--qat int8:REGEX` (docs/formats.md, docs/quantization.md).

A layer is a node of the traced graph named as reports name it (`Node.report_name`): its module path for a module
call (`conv1`, `layer1.conv2`, `fc`), else the graph's value name (`relu_1`, `add_3`: functional ops). REGEX selects
the layers whose name it matches anywhere (`re.search`, as `--train REGEX` matches parameter names; anchor with
`^...$`). A pattern that matches no layer is refused, naming some of the model's layers. What a matched layer
changes is the format's own business: odl/lower/fp8.py (`select_reads`, `grad_wanted`) and
odl/lower/ops/fakequant.py (`points`, `weights`).
"""
from __future__ import annotations

import re

from odl.common.errors import OdlError

SHOWN = 16       # layer names listed when a pattern matches none


def split_option(flag: str, value: str, kinds: tuple[str, ...], per_layer: tuple[str, ...]) -> tuple[str, str]:
    """'fp8:REGEX' -> ('fp8', 'REGEX'); 'fp8' -> ('fp8', ''). kinds: the values the flag takes; per_layer: those
    that take a pattern. The pattern must compile and not be empty."""
    kind, sep, pattern = value.partition(":")
    if kind not in kinds:
        raise OdlError(f"{flag} {value}: expected one of {', '.join(kinds)}"
                       + (f" (or {'|'.join(per_layer)}:REGEX for some layers)" if per_layer else ""))
    if not sep:
        return kind, ""
    if kind not in per_layer:
        raise OdlError(f"{flag} {value}: {kind} takes no layer pattern (only {', '.join(per_layer)} does)")
    if not pattern:
        raise OdlError(f"{flag} {value}: empty layer pattern after ':' (give {kind} for every layer)")
    try:
        re.compile(pattern)
    except re.error as e:
        raise OdlError(f"{flag} {value}: bad layer regex '{pattern}': {e}") from None
    return kind, pattern


def layer_names(graph) -> list[str]:
    """The graph's layer names as reports show them, in graph order, each once."""
    return list(dict.fromkeys(n.report_name for n in graph.nodes if n.op != "fakequant"))


def matched(graph, flag: str, pattern: str) -> set[str]:
    """The graph nodes (by value name) whose layer name `pattern` matches; refused when it matches none."""
    rx = re.compile(pattern)
    out = {n.name for n in graph.nodes if n.op != "fakequant" and rx.search(n.report_name)}
    if not out:
        names = layer_names(graph)
        more = f", ... ({len(names)} in all)" if len(names) > SHOWN else ""
        raise OdlError(f"{flag}:{pattern} matches no layer of the model (layers: {', '.join(names[:SHOWN])}{more})")
    return out


def nothing_selected(flag: str, pattern: str, graph, what: str) -> OdlError:
    """The error for a pattern whose layers select nothing of the format (e.g. only a flatten)."""
    hits = [n.report_name for n in graph.nodes if n.name in matched(graph, flag, pattern)]
    return OdlError(f"{flag}:{pattern} matches layer(s) {', '.join(dict.fromkeys(hits))}, which {what} "
                    f"(layers: {', '.join(layer_names(graph)[:SHOWN])})")
