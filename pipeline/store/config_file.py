"""Reading YAML files that people write (the data catalog, run configs) into typed pydantic models.

The point is the error messages: a typo must be reported as ``file:line`` for syntax errors and
as ``file: unknown key `sources.synth-demo.spilt` (expected one of: ...)`` for schema errors, never
as a pydantic dump or a traceback. PyYAML silently keeps the last of two equal keys, which would
let a copy-pasted source shadow another; we refuse duplicates instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.errors import HvdError


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that rejects a mapping with the same key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping
)


def read_yaml(path: Path, error: type[HvdError] = HvdError) -> dict[str, Any]:
    """The top-level mapping of YAML file ``path``; any problem raises ``error`` naming the file
    (and line and column for syntax errors)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {path}: {exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise error(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: YAML error: {exc}") from None
    if data is None:
        raise error(f"{path} is empty")
    if not isinstance(data, dict):
        raise error(
            f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}"
        )
    return data


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model that holds the last element of ``loc`` (for 'expected one of')."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return []
            current = info.annotation
        elif get_origin(current) in (dict, list):
            current = get_args(current)[-1]
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def describe_validation_error(exc: ValidationError, model: type[BaseModel], where: str) -> str:
    """One line per problem, each naming the dotted key path, prefixed by ``where`` (the file)."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(part) for part in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
            lines.append(f"unknown key `{dotted}`{hint}")
        elif err["type"] == "missing":
            lines.append(f"missing key `{dotted}`")
        else:
            lines.append(f"`{dotted}`: {err['msg']} (got {err['input']!r})")
    if len(lines) == 1:
        return f"{where}: {lines[0]}"
    return f"{where}:\n" + "\n".join(f"  - {line}" for line in lines)


def merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` applied: nested mappings merge, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build_config(model: type[BaseModel], presets: dict[str, dict], preset: str | None = None, path: Path | None = None, overrides: dict | None = None):
    """A run config: the preset, then the YAML file, then command-line overrides (each level replaces
    what it names); any problem is a ``HvdError`` naming the file or preset and the key at fault."""
    data: dict = {}
    if preset is not None:
        if preset not in presets:
            raise HvdError(f"unknown preset {preset!r}; choose one of: {', '.join(presets)}")
        data = merge(data, presets[preset])
    if path is not None:
        data = merge(data, read_yaml(Path(path), HvdError) or {})
    data = merge(data, overrides or {})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where = str(path) if path is not None else f"preset {preset}" if preset is not None else "the run config"
        raise HvdError(describe_validation_error(exc, model, where)) from None


def save_config(config: BaseModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
