"""Reading a job's YAML file: validated against its section models, every problem listed, dotted overrides."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vad.config.common import ConfigError, StorageConfig


def _describe(error: dict[str, Any], model: type[BaseModel]) -> str:
    loc = ".".join(str(part) for part in error["loc"]) or "<root>"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(sorted(allowed))})"
        return f"{loc}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{loc}: required key is missing"
    return f"{loc}: {error['msg']} (got {error.get('input')!r})"


def _allowed_keys(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in path:
        field = current.model_fields.get(str(part)) if isinstance(current, type) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        current = field.annotation
    return list(current.model_fields)


def parse_config(data: Any, model: type[BaseModel], origin: str = "<config>") -> Any:
    """Validate a mapping against a config model; raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(err, model) for err in exc.errors()]
        raise ConfigError(f"{origin}: invalid configuration\n  " + "\n  ".join(lines)) from None


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_config(path: str | Path, model: type[BaseModel], overrides: dict | None = None) -> Any:
    """Read a YAML job file, apply dotted-key overrides, and validate it."""
    data = _read_yaml(Path(path))
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    return parse_config(data, model, str(path))


def load_storage(path: str | Path) -> StorageConfig:
    """The `storage` section of a job YAML file (score or train), for commands that only read results."""
    data = _read_yaml(Path(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return parse_config(data.get("storage") or {}, StorageConfig, f"{path} (storage)")


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: '{part}' is not a section")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` with the value read as YAML (so numbers, booleans and null work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)
