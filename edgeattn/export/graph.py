"""ONNX graph helpers shared by export, simplify and audit: recursion into subgraphs, node-name
repair, dynamo-to-TorchScript naming, and the If splice that puts two fixed-order exports under
one runtime branch. The naming convention itself is in :mod:`edgeattn.export.naming`.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Callable, Iterator

import onnx
from onnx import helper

from edgeattn.export.naming import TAG_SEP, has_module_path, scope_of, split_name, with_suffix


# --------------------------------------------------------------------------- traversal
def subgraphs(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.name, a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            for i, g in enumerate(a.graphs):
                yield f"{a.name}{i}", g


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every nested subgraph, depth first."""
    yield graph
    for n in graph.node:
        for _, g in subgraphs(n):
            yield from iter_graphs(g)


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs (If branches, Loop bodies)."""
    for g in iter_graphs(graph):
        yield from g.node


def default_opset(model: onnx.ModelProto) -> int | None:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return None


# --------------------------------------------------------------------------- naming repair
def repair_names(model: onnx.ModelProto, reference: onnx.ModelProto | None = None) -> int:
    """Give every node a unique name carrying its module path; return how many changed.

    A node without such a name (exporter helper constants, nodes a simplifier created) takes,
    in order: the name the node producing the same output had in ``reference``; the scope of
    a consumer; the scope of the producer of its first input; the root scope. Names stay
    unique over the whole model (subgraphs included).
    """
    ref: dict[str, str] = {}
    if reference is not None:
        for n in iter_nodes(reference.graph):
            if has_module_path(n.name):
                for o in n.output:
                    if o:
                        ref.setdefault(o, n.name)
    used: set[str] = set()
    changed = 0

    def fix_graph(graph: onnx.GraphProto, tags: str) -> None:
        nonlocal changed
        producer: dict[str, onnx.NodeProto] = {}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for o in n.output:
                producer[o] = n
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        for n in graph.node:
            name = n.name
            if not has_module_path(name) or name in used:
                new = None
                cand = next((ref[o] for o in n.output if o in ref), None)
                if cand is not None and has_module_path(cand):
                    new = cand
                else:
                    scope = None
                    for o in n.output:
                        for c in consumers.get(o, []):
                            if has_module_path(c.name):
                                scope = scope_of(c.name)
                                break
                        if scope is not None:
                            break
                    if scope is None:
                        for i in n.input:
                            p = producer.get(i)
                            if p is not None and has_module_path(p.name):
                                scope = scope_of(p.name)
                                break
                    if scope is None:
                        scope = ""
                    new = f"{scope}/{n.op_type}{tags}"
                if not has_module_path(new):
                    new = f"/{n.op_type}{tags}"
                base, k = new, 0
                while new in used:
                    k += 1
                    new = with_suffix(base, k)
                if new != n.name:
                    n.name = new
                    changed += 1
            used.add(n.name)
            for _, g in subgraphs(n):
                # a branch's tags: those its (well-named) nodes already carry, else the If's
                sub = next((split_name(x.name)[0] for x in g.node if split_name(x.name)[0]), None)
                fix_graph(g, "".join(TAG_SEP + t for t in (sub or split_name(n.name)[0])))

    fix_graph(model.graph, "")
    return changed


def rename_from_torch_metadata(
    model: onnx.ModelProto, branch_tags: Callable[[onnx.NodeProto], tuple[str, str]]
) -> None:
    """Name the nodes of a dynamo export like TorchScript does, from the module scopes the
    dynamo exporter stores in ``pkg.torch.onnx.name_scopes`` (``['', 'blocks.0',
    'blocks.0.attn', 'matmul']`` -> ``/blocks.0/attn/MatMul``). Nodes in If branches get the
    If node's scope and an ``@tag`` suffix from ``branch_tags(if_node)``."""

    containers = ("Sequential", "ModuleList", "ModuleDict")

    def module_path(scopes: list[str], classes: list[str]) -> str:
        # TorchScript names a module relative to its nearest non-container ancestor:
        # patch_embed.proj.0.0 (inside two Sequentials) -> /patch_embed/proj/proj.0/proj.0.0
        parts: list[str] = []
        base = ""
        for k, q in enumerate(scopes[:-1]):  # the last scope is the fx node itself
            if not q:
                continue
            rel = q[len(base) + 1 :] if base and q.startswith(base + ".") else q
            parts.append(rel)
            cls = classes[k] if k < len(classes) else ""
            if not cls.endswith(containers):
                base = q
        return "".join(f"/{p}" for p in parts)

    def visit(graph: onnx.GraphProto, tags: str, outer_scope: str) -> None:
        for n in graph.node:
            meta = {p.key: p.value for p in n.metadata_props}
            scopes = meta.get("pkg.torch.onnx.name_scopes")
            path = outer_scope
            if scopes:
                try:
                    lst = [str(s) for s in ast.literal_eval(scopes)]
                    cls = [
                        str(s)
                        for s in ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
                    ]
                except (ValueError, SyntaxError):  # pragma: no cover - malformed metadata
                    lst, cls = [], []
                if outer_scope == "" and lst:
                    path = module_path(lst, cls)
            n.name = f"{path}/{n.op_type}{tags}"
            if n.op_type == "If":
                then_tag, else_tag = branch_tags(n)
                for a in n.attribute:
                    if a.name == "then_branch":
                        visit(a.g, f"{tags}{TAG_SEP}{then_tag}", path)
                    elif a.name == "else_branch":
                        visit(a.g, f"{tags}{TAG_SEP}{else_tag}", path)
            else:
                for _, g in subgraphs(n):
                    visit(g, tags, path)

    visit(model.graph, "", "")


# --------------------------------------------------------------------------- splice
def _tensor_key(t: onnx.TensorProto) -> str:
    h = hashlib.sha1()
    h.update(str(t.data_type).encode())
    h.update(str(list(t.dims)).encode())
    h.update(onnx.numpy_helper.to_array(t).tobytes())
    return h.hexdigest()


def _rename_graph(graph: onnx.GraphProto, rn: Callable[[str], str], node_tag: str) -> None:
    for n in graph.node:
        n.input[:] = [rn(i) if i else i for i in n.input]
        n.output[:] = [rn(o) if o else o for o in n.output]
        if node_tag:
            n.name = n.name + node_tag
        for _, g in subgraphs(n):
            _rename_graph(g, rn, node_tag)
    for coll in (graph.input, graph.output, graph.value_info):
        for v in coll:
            v.name = rn(v.name)
    for t in graph.initializer:
        t.name = rn(t.name)


def splice_if(
    branches: list[tuple[str, onnx.ModelProto]],
    cond_nodes: list[onnx.NodeProto],
    cond_initializers: list[onnx.TensorProto],
    cond_output: str,
    if_name: str,
) -> onnx.ModelProto:
    """One model whose body is ``If(cond, then=branches[0], else=branches[1])``.

    Both branch models must have the same inputs and outputs (names and types). Their
    initializers move to the outer graph, deduplicated by content (the two orders share
    every weight), so the file is not twice the size. Every value and node inside a branch
    is tagged (``qk_first/...`` values, ``/.../MatMul@qk_first`` nodes).
    """
    # Long on purpose: the renaming maps built here are used all the way down.
    if len(branches) != 2:
        raise ValueError("splice_if needs exactly two branches")
    (t_tag, t_model), (e_tag, e_model) = branches
    main_inputs = [
        onnx.ValueInfoProto.FromString(v.SerializeToString()) for v in t_model.graph.input
    ]
    in_names = {v.name for v in main_inputs}
    outer_inits: list[onnx.TensorProto] = [
        onnx.TensorProto.FromString(t.SerializeToString()) for t in cond_initializers
    ]
    used = {t.name for t in outer_inits} | in_names | {o for n in cond_nodes for o in n.output}
    canon: dict[str, str] = {}
    branch_graphs: list[onnx.GraphProto] = []
    for tag, model in ((t_tag, t_model), (e_tag, e_model)):
        g = onnx.GraphProto.FromString(model.graph.SerializeToString())
        init_map: dict[str, str] = {}
        for t in g.initializer:
            key = _tensor_key(t)
            if key in canon:
                init_map[t.name] = canon[key]
                continue
            new = t.name if t.name not in used else f"{tag}/{t.name}"
            k = 0
            while new in used:
                k += 1
                new = f"{tag}/{t.name}_{k}"
            t2 = onnx.TensorProto.FromString(t.SerializeToString())
            t2.name = new
            outer_inits.append(t2)
            used.add(new)
            canon[key] = new
            init_map[t.name] = new

        def rn(name: str, _tag: str = tag, _m: dict[str, str] = init_map) -> str:
            if name in in_names:
                return name
            if name in _m:
                return _m[name]
            return f"{_tag}/{name}"

        del g.initializer[:]
        outputs = [onnx.ValueInfoProto.FromString(v.SerializeToString()) for v in g.output]
        del g.input[:]
        _rename_graph(g, rn, f"{TAG_SEP}{tag}")
        produced = {o for n in g.node for o in n.output}
        for v in g.output:
            if v.name not in produced:  # an output that is an input or a weight: copy it
                src = v.name
                v.name = f"{tag}/{src}__out"
                g.node.append(
                    helper.make_node(
                        "Identity", [src], [v.name], name=f"/Identity_out{TAG_SEP}{tag}"
                    )
                )
        g.name = tag
        branch_graphs.append(g)
        if tag == t_tag:
            then_outputs = outputs
    if_node = helper.make_node(
        "If",
        [cond_output],
        [v.name for v in then_outputs],
        name=if_name,
        then_branch=branch_graphs[0],
        else_branch=branch_graphs[1],
    )
    main = helper.make_graph(
        [*cond_nodes, if_node],
        t_model.graph.name or "main",
        main_inputs,
        then_outputs,
        outer_inits,
    )
    out = helper.make_model(main, opset_imports=list(t_model.opset_import))
    out.ir_version = t_model.ir_version
    out.producer_name = t_model.producer_name
    out.producer_version = t_model.producer_version
    return out
