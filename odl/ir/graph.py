"""The forward graph IR: what torch.fx gave us, reduced to ops odl knows, with shapes."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Node:
    name: str                 # the fx node name; also the name of the value it produces
    op: str                   # odl op name: 'conv2d', 'linear', 'relu', 'flatten', ...
    target: str               # what the user wrote: module path ('c1') or function ('torch.flatten')
    inputs: list[str]         # names of the values it consumes
    shape: tuple[int, ...]    # shape of the value it produces
    attrs: dict = field(default_factory=dict)   # op-specific settings (stride, padding, ...)
    params: dict = field(default_factory=dict)  # role ('weight', 'bias') -> PyTorch parameter name
    module: str | None = None # qualified module name for module calls

    @property
    def report_name(self) -> str:
        return self.module or self.name

    def describe(self) -> str:
        return f"graph node '{self.name}' ({self.target})"


@dataclass
class Graph:
    input: str                               # name of the model input value
    input_shape: tuple[int, ...]
    output: str                              # name of the value the model returns (logits)
    nodes: list[Node]                        # topological order
    params: dict[str, tuple[int, ...]]       # PyTorch parameter name -> shape
    shapes: dict[str, tuple[int, ...]]       # value name -> shape (input included)
    exported: object = None                  # torch.export frontend: odl.frontend.export.Exported (the reference
                                             # runs that program, so values carry the graph's names)
    counters: list = field(default_factory=list)  # integer buffers the step adds 1 to (BN num_batches_tracked)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def consumers(self, value: str) -> list[Node]:
        return [n for n in self.nodes if value in n.inputs]
