"""The node lists of ONNX graphs, read without the onnx package, and the map from the nodes ONNX
Runtime actually runs (after fusion) back to the original nodes they replaced.

Reading: a streaming walk of the protobuf wire format (ModelProto.graph = field 7; GraphProto.node
= 1, initializer = 5, sparse_initializer = 15, input = 11; NodeProto.input = 1, output = 2,
name = 3, op_type = 4, domain = 7). Everything else, initializers and node attributes included, is
seeked over, so a model with large weights costs only its node list. Subgraphs (If/Loop bodies) are
not read: their nodes fall back to name-based attribution.

Mapping (:func:`origins`): tensor names survive fusion far better than node names. An optimised
node *covers* the original nodes found by walking the original graph backwards from the producers
of its outputs, through tensors that no longer exist in the optimised graph (they were fused
away), stopping at tensors the optimised graph still has (graph inputs, initializers, other nodes'
outputs), at original nodes that still run under their own name, and at constant-only nodes (they
are folded at load; the exporter shares one Constant across blocks). A node whose outputs are all
new tensors (layout reorders, NCHWc convs) takes the cover of the first covered node downstream of
it, else upstream; a node with no cover at all falls back to its own name. A node writing only new tensors but named ``<original tensor>_<suffix>`` (NCHWc convs) is
walked from that tensor's producer.
"""

from __future__ import annotations

import io
import os
from collections import deque
from typing import Any, BinaryIO, Dict, List, Optional, Set, Tuple

from . import records

_GRAPH = 7  # ModelProto.graph
_NODE, _INIT, _INPUT, _SPARSE_INIT = 1, 5, 11, 15  # GraphProto fields
_TENSOR_NAME = 8  # TensorProto.name
_SPARSE_VALUES = 1  # SparseTensorProto.values (a TensorProto)
_VALUE_INFO_NAME = 1  # ValueInfoProto.name


class GraphReadError(ValueError):
    pass


class Graph:
    """Nodes (dicts: name, op, domain, inputs, outputs) in file order, plus graph input and
    initializer names."""

    def __init__(self) -> None:
        self.nodes: List[Dict[str, Any]] = []
        self.inputs: Set[str] = set()
        self.initializers: Set[str] = set()

    def tensors(self) -> Set[str]:
        """Every tensor name the graph has: inputs, initializers, node outputs."""
        out = set(self.inputs) | self.initializers
        for n in self.nodes:
            out.update(t for t in n["outputs"] if t)
        return out

    def producers(self) -> Dict[str, int]:
        """Tensor name -> index of the node that produces it."""
        return {t: i for i, n in enumerate(self.nodes) for t in n["outputs"] if t}

    def consumers(self) -> Dict[str, List[int]]:
        out: Dict[str, List[int]] = {}
        for i, n in enumerate(self.nodes):
            for t in n["inputs"]:
                if t:
                    out.setdefault(t, []).append(i)
        return out


def _varint(f: BinaryIO) -> Optional[int]:
    """records' varint reader (the same protobuf walk), its error as a GraphReadError."""
    try:
        return records._varint(f)
    except ValueError as exc:
        raise GraphReadError(str(exc)) from None


def _fields(f: BinaryIO, end: int):
    """Yield (field, wire, length) for each field until ``end`` (absolute offset).

    For length-delimited fields (wire 2) the caller must read or skip ``length`` bytes; other wire
    types are consumed here (length is None). A field running past ``end`` raises."""
    while f.tell() < end:
        tag = _varint(f)
        if tag is None:
            raise GraphReadError("truncated message")
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            if _varint(f) is None:
                raise GraphReadError("truncated varint")
            yield field, wire, None
        elif wire == 1:
            f.seek(8, 1)
            yield field, wire, None
        elif wire == 5:
            f.seek(4, 1)
            yield field, wire, None
        elif wire == 2:
            n = _varint(f)
            if n is None or f.tell() + n > end:
                raise GraphReadError("truncated field")
            yield field, wire, n
        else:
            raise GraphReadError(f"unsupported wire type {wire}")
        if f.tell() > end:
            raise GraphReadError("truncated field")


def _string(f: BinaryIO, n: int) -> str:
    data = f.read(n)
    if len(data) != n:
        raise GraphReadError("truncated string")
    return data.decode("utf-8", "replace")


def _named(f: BinaryIO, end: int, name_field: int, nested: Optional[int] = None) -> str:
    """The name of a TensorProto / ValueInfoProto ending at ``end`` (``nested``: the field holding
    a TensorProto whose name to use, for SparseTensorProto)."""
    name = ""
    for field, wire, n in _fields(f, end):
        if wire != 2:
            continue
        if field == name_field and nested is None:
            name = _string(f, n)
        elif nested is not None and field == nested:
            name = _named(f, f.tell() + n, name_field)
        else:
            f.seek(n, 1)
    f.seek(end)
    return name


def _node(f: BinaryIO, end: int) -> Dict[str, Any]:
    node: Dict[str, Any] = {"name": "", "op": "", "domain": "", "inputs": [], "outputs": []}
    for field, wire, n in _fields(f, end):
        if wire != 2:
            continue
        if field == 1:
            node["inputs"].append(_string(f, n))
        elif field == 2:
            node["outputs"].append(_string(f, n))
        elif field == 3:
            node["name"] = _string(f, n)
        elif field == 4:
            node["op"] = _string(f, n)
        elif field == 7:
            node["domain"] = _string(f, n)
        else:  # attributes (possibly large tensors or subgraphs), doc_string
            f.seek(n, 1)
    f.seek(end)
    return node


def _graph(f: BinaryIO, end: int) -> Graph:
    g = Graph()
    for field, wire, n in _fields(f, end):
        if wire != 2:
            continue
        stop = f.tell() + n
        if field == _NODE:
            g.nodes.append(_node(f, stop))
        elif field == _INIT:
            g.initializers.add(_named(f, stop, _TENSOR_NAME))
        elif field == _SPARSE_INIT:
            g.initializers.add(_named(f, stop, _TENSOR_NAME, nested=_SPARSE_VALUES))
        elif field == _INPUT:
            g.inputs.add(_named(f, stop, _VALUE_INFO_NAME))
        else:
            f.seek(n, 1)
    return g


def read_graph_bytes(data: bytes) -> Graph:
    return _read(io.BytesIO(data), len(data))


def read_graph(path: str) -> Graph:
    """The main graph's nodes of an .onnx file (weights are skipped, never read)."""
    with open(path, "rb") as f:
        return _read(f, os.fstat(f.fileno()).st_size)


def _read(f: BinaryIO, size: int) -> Graph:
    for field, wire, n in _fields(f, size):
        if wire != 2:
            continue
        if field == _GRAPH:
            return _graph(f, f.tell() + n)
        f.seek(n, 1)
    raise GraphReadError("no graph in the model")


def origins(original: Graph, optimized: Graph) -> Dict[str, List[str]]:
    """Optimised node name -> names of the original nodes it stands for (in original order).

    Nodes the walk cannot place are absent (the caller falls back to their own names)."""
    prod0 = original.producers()
    names0 = {n["name"]: i for i, n in enumerate(original.nodes) if n["name"]}
    # a node writing only new tensors may be named after the original tensor it stands for
    # (NCHWc: ``/proj.2/Relu_output_0_nchwc`` writes ``reorder_token_7``): that tensor seeds its
    # walk, and counts as still present, so a chain of such nodes is split node by node
    derived: List[Optional[str]] = [
        None if any(t in prod0 for t in n["outputs"]) else _derived_tensor(n["name"], prod0)
        for n in optimized.nodes
    ]
    tensors1 = optimized.tensors() | {t for t in derived if t}
    # constant subgraphs are folded (and deduplicated under new names) at load: they never run, and
    # the exporter shares one Constant across blocks, so they are not walked into
    const = constant_nodes(original)
    # original nodes that still run as themselves (same name, same op): never covered by another
    alive = {
        names0[n["name"]]
        for n in optimized.nodes
        if n["name"] in names0 and original.nodes[names0[n["name"]]]["op"] == n["op"]
    }

    covers: List[Set[int]] = []
    for n, base in zip(optimized.nodes, derived):  # noqa: B905 (3.8)
        own = names0.get(n["name"])
        seeds = [prod0[t] for t in n["outputs"] if t in prod0] or ([prod0[base]] if base else [])
        cover: Set[int] = set()
        todo = [i for i in seeds if (i not in alive or i == own) and i not in const]
        while todo:
            i = todo.pop()
            if i in cover:
                continue
            cover.add(i)
            for t in original.nodes[i]["inputs"]:
                if not t or t in tensors1:
                    continue
                j = prod0.get(t)
                if j is None or j in cover or j in const:
                    continue
                if j not in alive or j == own:
                    todo.append(j)
        if not cover and own is not None:
            cover = {own}
        covers.append(cover)

    # nodes whose outputs are all new tensors: borrow the cover of the nearest covered node,
    # downstream first (such a node prepares its consumer's input: ReorderInput,
    # gemm_input_reshape), upstream when nothing downstream is covered (a copy to the host)
    prod1 = optimized.producers()
    cons1 = optimized.consumers()
    for k in range(len(optimized.nodes)):
        if not covers[k]:
            covers[k] = _nearest(k, optimized, covers, cons1, prod1)

    out: Dict[str, List[str]] = {}
    for n, cover in zip(optimized.nodes, covers):  # noqa: B905 (3.8)
        if n["name"] and cover:
            out[n["name"]] = [original.nodes[i]["name"] for i in sorted(cover)]
    return out


def _derived_tensor(node_name: str, prod0: Dict[str, int]) -> Optional[str]:
    base, sep, _ = node_name.rpartition("_")
    return base if sep and base in prod0 else None


def constant_nodes(g: Graph) -> Set[int]:
    """Indices of nodes computed from constants only (Constant, and nodes whose every input is an
    initializer or a constant node's output)."""
    const_t = set(g.initializers)
    out: Set[int] = set()
    for i, n in enumerate(g.nodes):  # file order is topological for valid models
        ins = [t for t in n["inputs"] if t]
        if n["op"] == "Constant" or (ins and all(t in const_t for t in ins)):
            out.add(i)
            const_t.update(t for t in n["outputs"] if t)
    return out


def _nearest(
    k: int,
    g: Graph,
    covers: List[Set[int]],
    cons: Dict[str, List[int]],
    prod: Dict[str, int],
    limit: int = 64,
) -> Set[int]:
    for downstream in (True, False):
        seen = {k}
        queue = deque([k])
        while queue and len(seen) < limit:
            i = queue.popleft()
            if downstream:
                nxt = [j for t in g.nodes[i]["outputs"] if t for j in cons.get(t, ())]
            else:
                nxt = [prod[t] for t in g.nodes[i]["inputs"] if t in prod]
            for j in nxt:
                if j in seen:
                    continue
                if covers[j]:
                    return set(covers[j])
                seen.add(j)
                queue.append(j)
    return set()


def fusion_origins(
    model_path: str, optimized_path: Optional[str] = None
) -> Tuple[Optional[Dict[str, List[str]]], Optional[str]]:
    """(:func:`origins` of the model and the optimised graph ORT wrote, None) or (None, why not).

    Without ``optimized_path`` (optimisation disabled) the model's own graph stands for both."""
    try:
        g0 = read_graph(model_path)
        g1 = read_graph(optimized_path) if optimized_path else g0
        return origins(g0, g1), None
    except (OSError, GraphReadError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
