"""The VAE body of an exported scoring graph, and the float32 scoring arithmetic around it."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx

from edgevae.core.errors import ExportError

# The layers that carry weights. Everything else is either the VAE's activations (GELU) or the scoring
# arithmetic around it (normalization, squared error, reductions), which stays float32 at every precision.
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def scoring_arithmetic_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes outside the VAE body: before the first weight layer or after the last one.

    The body is every weight layer plus every node on a path between two of them; what is left is the
    normalization in front and the error and score arithmetic behind, plus their shape bookkeeping.
    """
    body = set(body_nodes(model))
    return [n.name for n in model.graph.node if n.op_type != "Constant" and n.name not in body]


def body_nodes(model: onnx.ModelProto) -> list[str]:
    nodes = [n for n in model.graph.node if n.op_type != "Constant"]
    by_name = {n.name: n for n in nodes}
    if len(by_name) != len(nodes):
        msg = "expected unique node names in the exported graph"
        raise ExportError(msg)
    producer = {out: n.name for n in nodes for out in n.output}
    consumers: dict[str, list[str]] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n.name)
    weights = [n.name for n in nodes if n.op_type in WEIGHT_OPS]
    if not weights:
        msg = f"the graph has no weight layers ({', '.join(WEIGHT_OPS)}); is it a WindowVAE scoring graph?"
        raise ExportError(msg)
    below = _reach(weights, lambda k: [c for out in by_name[k].output for c in consumers.get(out, [])])
    above = _reach(weights, lambda k: [producer[i] for i in by_name[k].input if i in producer])
    body = (below & above) | set(weights)
    return [n.name for n in nodes if n.name in body]


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Put the nodes in topological order, which ONNX requires and graph rewrites easily break."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in known for name in n.input)]
        if not ready:
            msg = f"the graph has a cycle or an undefined input around node {pending[0].name!r}"
            raise ExportError(msg)
        for node in ready:
            known.update(node.output)
        ordered.extend(ready)
        taken = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in taken]
    del graph.node[:]
    graph.node.extend(ordered)


def _reach(start: Iterable[str], step: Callable[[str], list[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(start)
    while stack:
        for nxt in step(stack.pop()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen
