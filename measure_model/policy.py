"""YAML policies: a safe, strict loader in front of ``measure_model.task``.

A *policy* is a YAML document ``{tasks: [...]}`` (or one task object),
validated by ``measure_model.task.parse_tasks``. YAML is read with a safe
loader subclass that rejects duplicate keys and anchors/aliases (no alias
bombs), limits the document to ``MAX_POLICY_BYTES`` and resolves scalars
like YAML 1.2's core schema (``80:59`` stays a string, ``yes`` is not a
boolean). An empty document is an empty policy and refused like one.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from measure_model.task import MAX_POLICY_BYTES, PolicyError, Task, parse_tasks

MAX_NESTING = 32  # YAML and JSON documents nest at most this deep (a deeper one is a 400)


class _PolicyLoader(yaml.SafeLoader):
    """Safe loader: no anchors/aliases, no duplicate keys, YAML 1.2-like scalars."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            line = event.start_mark.line + 1
            raise yaml.YAMLError(f"anchors and aliases are not allowed (line {line})")
        depth = getattr(self, "_measure_depth", 0) + 1
        if depth > MAX_NESTING:
            line = event.start_mark.line + 1
            raise yaml.YAMLError(f"nested more than {MAX_NESTING} levels deep (line {line})")
        self._measure_depth = depth
        try:
            return super().compose_node(parent, index)
        finally:
            self._measure_depth = depth - 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    raise yaml.YAMLError(
                        f"unhashable mapping key (line {key_node.start_mark.line + 1})") from None
                if duplicate:
                    raise yaml.YAMLError(
                        f"duplicate key '{key}' (line {key_node.start_mark.line + 1})")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_PolicyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                           "tag:yaml.org,2002:bool")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
_PolicyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?[0-9]+[eE][-+]?[0-9]+"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def load_policy(text: str | bytes, source_name: str) -> list[Task]:
    """Parse and validate a YAML policy; raise PolicyError on any problem."""
    return parse_tasks(read_policy(text, source_name), source_name)


def read_policy(text: str | bytes, source_name: str) -> Any:
    """The YAML document of a policy, read with the strict loader (not yet validated);
    PolicyError for a size, encoding or YAML problem."""
    where = f"policy {source_name}"
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_POLICY_BYTES:
        raise PolicyError(f"{where}: {size} bytes is more than the limit of {MAX_POLICY_BYTES}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError(f"{where}: not valid UTF-8") from None
    try:
        obj = yaml.load(text, Loader=_PolicyLoader)  # noqa: S506 - safe loader subclass
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise PolicyError(f"{where}: invalid YAML: {detail}") from None
    return obj
