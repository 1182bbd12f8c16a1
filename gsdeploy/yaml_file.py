"""Reading a YAML data file (profiles, claims) within bounds.

yaml.safe_load constructs no arbitrary Python objects, but anchors and aliases still let a few
hundred bytes stand for billions of values (a "billion laughs" file: 526 bytes grew to ~4 GB
when an error message repr'd it), and deep nesting exhausts the stack. So the event stream is
checked before anything is constructed: at most MAX_YAML_NODES values and MAX_YAML_DEPTH
levels counted with every alias expanded, and the file itself at most MAX_YAML_BYTES.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gsdeploy.errors import GsdeployError
from gsdeploy.limits import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, check_readable, short


def _where(event: yaml.Event) -> str:
    mark = event.start_mark
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def _check_events(text: str, path: Path, error: type[GsdeployError]) -> None:
    """Count values and depth as if every alias were written out, from the event stream,
    before anything is constructed. yaml.dump writes anchors for shared objects, so aliases
    are accepted as long as what they expand to stays within the limits."""
    nodes, depth = 0, 0
    size: dict[str, int] = {}  # anchor -> values it expands to
    height: dict[str, int] = {}  # anchor -> levels of nesting it adds
    open_: list[tuple[str | None, int, int]] = []  # (anchor, nodes at start, deepest level below)

    def add(n: int, h: int, event: yaml.Event) -> None:
        nonlocal nodes
        nodes += n
        if nodes > MAX_YAML_NODES:
            raise error(f"{path}: more than {MAX_YAML_NODES} YAML values once aliases are expanded{_where(event)}; "
                        "this is not a gsdeploy file")
        if depth + h > MAX_YAML_DEPTH:
            raise error(f"{path}: YAML nested more than {MAX_YAML_DEPTH} levels deep{_where(event)}")
        if open_:
            a, start, deepest = open_[-1]
            open_[-1] = (a, start, max(deepest, h))

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in size:
                raise error(f"{path}: not valid YAML{_where(event)}: alias *{short(event.anchor)} has no anchor")
            add(size[event.anchor], height[event.anchor], event)
        elif isinstance(event, yaml.ScalarEvent):
            add(1, 0, event)
            if event.anchor is not None:
                size[event.anchor], height[event.anchor] = 1, 0
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            add(1, 1, event)
            depth += 1
            open_.append((event.anchor, nodes, 0))
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, start, deepest = open_.pop()
            depth -= 1
            if open_:
                a, st, d = open_[-1]
                open_[-1] = (a, st, max(d, deepest + 1))
            if anchor is not None:
                size[anchor], height[anchor] = nodes - start + 1, deepest + 1


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _no_duplicate_keys(loader: type) -> type:
    """`loader` refusing a key written twice in one mapping: PyYAML keeps the last silently, so
    a sweep file with two `models:` lists would time only the second (merge keys `<<` may still
    be overridden, as YAML intends)."""

    class Strict(loader):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN202 - PyYAML's signature
            if isinstance(node, yaml.MappingNode):
                seen: set[tuple[str, str]] = set()
                for key, _ in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                        if (key.tag, key.value) in seen:
                            raise yaml.constructor.ConstructorError(
                                None, None, f"key {short(key.value)!r} is written twice in one mapping", key.start_mark)
                        seen.add((key.tag, key.value))
            return super().construct_mapping(node, deep)

    return Strict


def read_yaml(path: Path, error: type[GsdeployError], what: str, loader: type = yaml.SafeLoader) -> Any:
    """The document parsed by `loader` (SafeLoader or a subclass), or `error` with one line
    naming the file and the problem."""
    try:
        check_readable(path, what)
    except GsdeployError as e:
        raise error(str(e)) from None
    if path.stat().st_size > MAX_YAML_BYTES:
        raise error(f"{path}: {path.stat().st_size} bytes; a {what} is at most {MAX_YAML_BYTES} bytes")
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_YAML_BYTES + 1).decode("utf-8")
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (not UTF-8)") from None
    try:
        _check_events(text, path, error)
        data = yaml.load(text, Loader=_no_duplicate_keys(loader))  # noqa: S506 - SafeLoader or a subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error(f"{path}: not valid YAML{at}: {short(problem)}") from None
    except RecursionError:
        raise error(f"{path}: YAML nested too deeply") from None
    if data is None:
        raise error(f"{path}: the file is empty")
    return data
