"""Node-name convention of every file edgeattn writes (stdlib only: the device-side runtime may
vendor these few lines to attribute profiled time to blocks).

    /<module path>/<OpType>[_k][@tag]*        e.g. /blocks.0/attn/MatMul_1
                                                   /blocks.3/attn/MatMul@qk_first

The module path is the PyTorch module path, one ``/`` segment per module level, named as the
TorchScript exporter does (ModuleList items keep their index: ``blocks.3``, ``block1.0``;
Sequential items are named relative to the Sequential's parent: ``proj/proj.0``). Nodes inside
an ``If`` branch carry the branch as an ``@tag`` suffix on the op segment (``@qk_first`` /
``@kv_first`` for the SimA order dispatch, ``@then`` / ``@else`` otherwise): the path stays
first, so a parser that drops the last segment (``edgeattn.runtime.profile.scope``) attributes
branch nodes to their block unchanged, and the two branches' nodes keep distinct names. Nodes of
the root module's own forward are ``/<OpType>``; the order dispatcher's are ``/order_dispatch/…``.

Block rule (the audit's rows, the runtime's per-block times): the first module-path segment,
``(root)`` when there is none.
"""

from __future__ import annotations

ROOT_BLOCK = "(root)"
TAG_SEP = "@"


def split_name(name: str) -> tuple[list[str], list[str]]:
    """``(tags, module_path)`` of a node name; the module path excludes the op segment."""
    if not name.startswith("/"):
        return [], []
    segs = name.split("/")[1:]
    tags = segs[-1].split(TAG_SEP)[1:]
    return tags, [s for s in segs[:-1] if s]


def has_module_path(name: str) -> bool:
    """True if ``name`` follows the convention (starts with ``/`` and names an op)."""
    return name.startswith("/") and len(name) > 1 and not name.endswith("/")


def scope_of(name: str) -> str:
    """Everything but the op segment: ``/blocks.0/attn/MatMul@t`` -> ``/blocks.0/attn``."""
    return name.rsplit("/", 1)[0] if "/" in name else ""


def with_suffix(name: str, k: int) -> str:
    """``name`` made unique with ``_k`` on the op, before any tags: ``/a/MatMul_2@t``."""
    scope, _, last = name.rpartition("/")
    op, sep, tags = last.partition(TAG_SEP)
    return f"{scope}/{op}_{k}{sep}{tags}"


def block_of(name: str) -> str:
    """The block a node belongs to: its first module-path segment, else ``(root)``."""
    _, path = split_name(name)
    return path[0] if path else ROOT_BLOCK
