"""The YAML front end: PyYAML's composed nodes become the document tree of ``lines``.

Imported only for text that is not JSON. Aliases and unknown tags are refused, and no
message quotes the source line (it can hold a password).
"""

from __future__ import annotations

import yaml

from provision.inbox.lines import Entry, InvalidNode, MappingNode, Node, ScalarNode, SequenceNode
from provision.inbox.read import ReadError
from provision.inbox.show import show

_YAML_TAG = "tag:yaml.org,2002:"
_YAML_SCALAR_KINDS = {
    f"{_YAML_TAG}str": "string",
    f"{_YAML_TAG}int": "integer",
    f"{_YAML_TAG}float": "float",
    f"{_YAML_TAG}bool": "boolean",
    f"{_YAML_TAG}null": "null",
    f"{_YAML_TAG}timestamp": "date",
}


class _YamlLoader(yaml.SafeLoader):
    """A safe loader used only to compose nodes; it refuses aliases."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            # An alias can repeat a node exponentially ("billion laughs").
            raise ReadError(
                "aliases (*name) are not supported; write the value out instead",
                line=mark.line + 1 if mark is not None else None,
            )
        return super().compose_node(parent, index)


# Plain "=" and "<<" (YAML 1.1 value and merge keys) stay strings: nothing here uses them.
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in _YAML_SCALAR_KINDS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_yaml(text: str) -> Node | None:
    """Parse YAML text into the tree; None if it holds no document. Raise :class:`ReadError`."""
    try:
        loader = _YamlLoader(text)
        try:
            node = loader.get_single_node()
            return None if node is None else _from_yaml(node, loader)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc) from None
    except yaml.reader.ReaderError as exc:
        character = f"U+{exc.character:04X}" if isinstance(exc.character, int) else "a character"
        raise ReadError(
            f"invalid YAML: {character} is not allowed in YAML",
            line=text.count("\n", 0, exc.position) + 1,
        ) from None
    except yaml.YAMLError as exc:
        raise ReadError(f"invalid YAML: {type(exc).__name__}") from None


def _yaml_error(exc: yaml.MarkedYAMLError) -> ReadError:
    # Built from `problem`/`context` only: str(exc) quotes the source line, which can
    # hold a password.
    mark = exc.problem_mark or exc.context_mark
    where = f" at column {mark.column + 1}" if mark is not None else ""
    context = exc.context or ""
    if context and exc.context_mark and mark and exc.context_mark.line != mark.line:
        context += f" at line {exc.context_mark.line + 1}"
    # PyYAML's halves read as one sentence: "while scanning a quoted scalar, found ...".
    reason = ", ".join(part for part in (context, exc.problem) if part) or "syntax error"
    return ReadError(
        f"invalid YAML{where}: {reason}", line=mark.line + 1 if mark is not None else None
    )


def _from_yaml(node: yaml.Node, loader: _YamlLoader) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode) and node.tag == f"{_YAML_TAG}map":
        entries = tuple(
            Entry(
                key.value if isinstance(key, yaml.ScalarNode) else None,
                key.start_mark.line + 1,
                _from_yaml(value, loader),
            )
            for key, value in node.value
        )
        return MappingNode(entries, line)
    if isinstance(node, yaml.SequenceNode) and node.tag == f"{_YAML_TAG}seq":
        return SequenceNode(tuple(_from_yaml(item, loader) for item in node.value), line)
    if isinstance(node, yaml.ScalarNode) and node.tag in _YAML_SCALAR_KINDS:
        return _yaml_scalar(node, loader, line)
    return InvalidNode(f"unsupported YAML tag {show(node.tag)}; remove the tag", line)


def _yaml_scalar(node: yaml.ScalarNode, loader: _YamlLoader, line: int) -> Node:
    kind = _YAML_SCALAR_KINDS[node.tag]
    value: str | int | float | bool | None
    try:
        if kind == "integer":
            value = loader.construct_yaml_int(node)
        elif kind == "float":
            value = loader.construct_yaml_float(node)
        elif kind == "boolean":
            value = loader.construct_yaml_bool(node)
        elif kind == "null":
            value = None
        else:
            value = str(node.value)
    # Only explicit tags get here with text that does not fit (`!!int x`, `!!bool ""`).
    except (ValueError, KeyError, IndexError):
        return InvalidNode(f"the value tagged {show(node.tag)} is not a valid {kind}", line)
    return ScalarNode(value, kind, line, str(node.value), plain=node.style is None)
