"""A command's sections of the params file, with `--set key=value` overrides applied.

With no `--params FILE`, `./params.yaml` is used when it exists (DVC's convention), else every
section takes its built-in defaults, which are the full-scale baseline; commands say which they used,
in their last line, and before any work starts when a section they read falls back to the defaults
(a params file without a `model:` section would otherwise train the full-scale model unannounced).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from stages.params import ConfigError, build, did_you_mean

DEFAULT_PARAMS = Path("params.yaml")
# Every section a params file may hold (`golf params` lists their keys); a typo'd section name is
# an error rather than silently ignored.
KNOWN_SECTIONS = ("model", "tokenize", "train", "average", "quantize", "compress", "eval")


def params_path(params_file: Path | None) -> Path | None:
    """The params file a command reads: the given one, else ./params.yaml if present, else None."""
    if params_file is not None:
        return params_file
    return DEFAULT_PARAMS if DEFAULT_PARAMS.is_file() else None


def describe_source(params_file: Path | None, sections: tuple[str, ...]) -> str:
    """One line saying where a command's params came from."""
    path = params_path(params_file)
    where = str(path) if path is not None else "built-in defaults (no ./params.yaml)"
    return f"params: {where} [{', '.join(sections)}]"


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


def _read_file(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such params file") from None
        return {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    unknown = sorted(str(k) for k in raw if k not in KNOWN_SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]!r}"
                          f"{did_you_mean(unknown[0], KNOWN_SECTIONS)} (known: "
                          f"{', '.join(KNOWN_SECTIONS)})")
    return raw


def fallback_notice(params_file: Path | None, sections: tuple[str, ...]) -> str | None:
    """One line naming the sections that take golf's built-in defaults, or None."""
    path = params_path(params_file)
    raw = _read_file(path, params_file is not None) if path is not None else {}
    missing = [s for s in sections if raw.get(s) is None]
    if not missing:
        return None
    where = f"{path} has no {', '.join(missing)} section" if path is not None else \
        "no ./params.yaml"
    return (f"params: {where}: golf's built-in defaults for {', '.join(missing)} (the full-scale "
            f"baseline; `golf params {' '.join(missing)}` lists them)")


def read_sections(params_file: Path | None, sections: tuple[str, ...],
                  overrides: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """The raw values of each section, from the params file then overrides, before any defaults.

    For a command that must know which keys the user gave (`golf import` checks given shape values
    against the weights); the others use `load_params`.
    """
    path = params_path(params_file)
    raw = _read_file(path, params_file is not None) if path is not None else {}
    values = {}
    for s in sections:
        section = {} if raw.get(s) is None else raw[s]
        if not isinstance(section, dict):
            raise ConfigError(f"params section {s!r} must be a mapping, got {section!r}")
        values[s] = dict(section)
    for item in overrides:
        section, name, value = parse_override(item, sections)
        values[section][name] = value
    return values


def load_params(params_file: Path | None, classes: dict[str, type],
                overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """Each section's params dataclass (`classes`: section name -> class; the first is the
    command's own section, which bare `--set` keys belong to)."""
    values = read_sections(params_file, tuple(classes), overrides)
    built = {s: build(cls, values[s]) for s, cls in classes.items()}
    notice = fallback_notice(params_file, tuple(classes))
    if notice:
        click.echo(notice, err=True)
    return built
