"""Read YAML that may be hostile: safe tags only, and a bounded size once aliases are expanded.

``yaml.safe_load`` runs no code, but a 1 KB file of nested aliases ("billion laughs") expands to
billions of nodes in whatever walks the result (validation, hashing, JSON). ``load_yaml`` composes
the node graph first (aliases are shared nodes there, so this is cheap), counts the nodes the
document has once every alias is expanded, and refuses it beyond ``MAX_NODES`` nodes, ``MAX_DEPTH``
levels of nesting, a recursive alias or a key given twice in one mapping. Numbers such as ``1e-3``
are floats, as in YAML 1.2 (PyYAML's YAML 1.1 rules read them as strings).
"""

from __future__ import annotations

import re

import yaml

from advkit.errors import AuditSpecError, short

MAX_NODES = 10_000
MAX_DEPTH = 64
MAX_BYTES = 1 << 20


class _Loader(yaml.SafeLoader):
    """The safe loader, plus YAML 1.2 floats without a dot (``1e-3``, ``-2E5``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _duplicate_key(node: yaml.MappingNode) -> str | None:
    seen = set()
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            if key.value in seen:
                return key.value
            seen.add(key.value)
    return None


def check_node_graph(root: yaml.Node, source: str) -> int:
    """The number of nodes of ``root`` with aliases expanded; AuditSpecError beyond the limits."""
    size: dict[int, int] = {}
    open_: set[int] = set()  # nodes on the current path (a child among them is a recursive alias)
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > MAX_NODES:
                raise AuditSpecError(
                    f"{source}: the YAML expands to more than {MAX_NODES} nodes (aliases such as "
                    "*name count once per use); an audit spec is small, so write it out plainly")
            continue
        if key in size:
            continue
        if key in open_:
            raise AuditSpecError(f"{source}: a YAML alias refers to itself (a recursive "
                                 "structure); remove the recursive alias")
        if depth > MAX_DEPTH:
            raise AuditSpecError(f"{source}: the YAML nests deeper than {MAX_DEPTH} levels; "
                                 "flatten it")
        if isinstance(node, yaml.MappingNode):
            dup = _duplicate_key(node)
            if dup is not None:
                raise AuditSpecError(f"{source}: the key {short(dup)} appears twice in one "
                                     f"mapping (line {node.start_mark.line + 1}); keep one")
        open_.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in _children(node) if id(c) not in size)
    return size[id(root)]


def load_yaml(raw: bytes | str, source: str = "spec") -> object:
    """Parse one YAML document with the safe loader, within the limits above."""
    if len(raw) > MAX_BYTES:
        raise AuditSpecError(f"{source} is larger than {MAX_BYTES} bytes, far more than an audit "
                             "spec needs; pass the YAML audit spec, not a data file")
    try:
        loader = _Loader(raw)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            check_node_graph(node, source)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise AuditSpecError(f"{source} is not valid YAML: {exc}") from None
    except RecursionError:
        raise AuditSpecError(f"{source}: the YAML nests too deeply; flatten it") from None
