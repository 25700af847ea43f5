"""YAML in, a validated :class:`Policy` out, or a :class:`PolicyError` whose every issue
names the field path and the line and column in the file the officer wrote.

The document is composed node by node (not ``safe_load``) so positions survive and
duplicate keys, which YAML would silently collapse, are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml
from pydantic import ValidationError

from appliance.errors import InvalidInput
from appliance.policy.schema import Policy

Path_ = tuple[str | int, ...]
MAX_POLICY_BYTES = 256 * 1024


@dataclass(frozen=True)
class Issue:
    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line else ""
        return f"{where}{self.path or '(document)'}: {self.message}"


class PolicyError(InvalidInput):
    """A policy that cannot be applied; ``issues`` lists every problem found."""

    slug = "invalid-policy"
    title = "Invalid policy"

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("; ".join(str(i) for i in issues))


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Positions:
    def __init__(self) -> None:
        self.at: dict[Path_, tuple[int, int]] = {}

    def find(self, path: Path_) -> tuple[int | None, int | None]:
        while path:
            if path in self.at:
                return self.at[path]
            path = path[:-1]
        return self.at.get((), (None, None))


def _to_python(node: yaml.Node, path: Path_, pos: _Positions, issues: list[Issue]) -> Any:
    pos.at[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = (
                yaml.safe_load(yaml.serialize(key_node))
                if not isinstance(key_node, yaml.ScalarNode)
                else key_node.value
            )
            key = str(key)
            if key in out:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                issues.append(Issue(format_path((*path, key)), "duplicate key", line, col))
            out[key] = _to_python(value_node, (*path, key), pos, issues)
            pos.at[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), pos, issues) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def parse_yaml(text: str) -> tuple[dict[str, Any], _Positions]:
    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        raise PolicyError([Issue("", f"policy is larger than {MAX_POLICY_BYTES // 1024} KiB")])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise PolicyError([Issue("", f"invalid YAML: {problem}", line, col)]) from None
    pos = _Positions()
    if node is None:
        return {}, pos
    issues: list[Issue] = []
    data = _to_python(node, (), pos, issues)
    if not isinstance(data, dict):
        raise PolicyError([Issue("", "a policy must be a mapping of fields (key: value)", *pos.find(()))])
    if issues:
        raise PolicyError(issues)
    return data, pos


def preset_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files("appliance._presets").iterdir()
        if p.name.endswith(".yaml")
    )


def preset_text(name: str) -> str:
    if name not in preset_names():
        raise PolicyError([Issue("extends", f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")])
    return (resources.files("appliance._presets") / f"{name}.yaml").read_text("utf-8")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) in ``override`` replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve(data: dict[str, Any], pos: _Positions, depth: int = 0) -> dict[str, Any]:
    parent = data.get("extends")
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise PolicyError([Issue("extends", "must be a preset name", *pos.find(("extends",)))])
    if depth > 4:
        raise PolicyError([Issue("extends", "presets extend each other too deeply (cycle?)", *pos.find(("extends",)))])
    try:
        base_data, base_pos = parse_yaml(preset_text(parent))
    except PolicyError as exc:
        line, col = pos.find(("extends",))
        raise PolicyError([Issue(i.path, i.message, line, col) for i in exc.issues]) from None
    base = _resolve(base_data, base_pos, depth + 1)
    base.pop("acknowledge_no_anonymization", None)  # an acknowledgement is never inherited
    merged = _merge(base, {k: v for k, v in data.items() if k != "extends"})
    merged["extends"] = parent
    return merged


def load_policy_text(text: str) -> Policy:
    """Parse, resolve ``extends``, validate the schema and lint; raise PolicyError listing every issue."""
    from appliance.policy.lint import lint

    data, pos = parse_yaml(text)
    merged = _resolve(data, pos)
    try:
        policy = Policy.model_validate(merged)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            path = tuple(
                p for p in err["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p == "[key]"))
            )
            message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            issues.append(Issue(format_path(path), message, *pos.find(path)))
        raise PolicyError(issues) from None
    problems = lint(policy)
    if problems:
        raise PolicyError([Issue(format_path(p), m, *pos.find(p)) for p, m in problems])
    return policy
