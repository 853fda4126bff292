"""Reading a command's sections of `params.yaml` and applying `--set key=value` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stages.config import ConfigError, build_section

DEFAULT_PARAMS = Path("params.yaml")


def parse_override(item: str, sections: tuple[str, ...]) -> tuple[str, str, Any]:
    """`key=value` -> (section, key, value). A bare key belongs to the command's own section."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    section, _, name = key.rpartition(".")
    section = section or sections[0]
    if section not in sections:
        raise ConfigError(f"unknown key {key} for this command (it reads: "
                          f"{', '.join(sections)})")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"{section}.{name}: cannot parse value {raw!r}") from None
    return section, name, value


def read_sections(params_file: Path | None, sections: tuple[str, ...],
                  overrides: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """The raw values of each section, from `params_file` then overrides, before any defaults.

    For a command that must know which keys the user gave (`golf import` checks given shape values
    against the weights); the others use `load_params`. With no file given, `./params.yaml` is used
    when it exists.
    """
    raw: dict[str, Any] = {}
    path = params_file if params_file is not None else DEFAULT_PARAMS
    if params_file is not None or path.is_file():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such params file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections")
    values = {s: dict(raw.get(s) or {}) for s in sections}
    for item in overrides:
        section, name, value = parse_override(item, sections)
        values[section][name] = value
    return values


def load_params(params_file: Path | None, sections: tuple[str, ...],
                overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Build the dataclass of each section from `params_file`, then overrides.

    With no file given, `./params.yaml` is used when it exists, else the built-in defaults.
    """
    values = read_sections(params_file, sections, overrides)
    return {s: build_section(s, values[s]) for s in sections}
