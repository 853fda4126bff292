"""Params: frozen dataclasses whose fields carry their type, choices, bounds and help text.

A section of params.yaml (or a `--set key=value` override) becomes one of these through `build`, and
every instance, however it is made, runs `validate` first thing in its `__post_init__`:

- the field's annotation decides the coercion: `int`, `float`, `bool`, `str`, `list[T]`,
  `tuple[T, ...]`, `dict[K, V]`, `T | None`, `Literal[...]` (the allowed values) and
  `Annotated[T, Range(...)]` (bounds);
- a value of the wrong type, out of bounds or not among the choices is a one-line `ConfigError`
  naming the key the way the user writes it (`train.warmdown_frac must be in [0, 1], got 1.3`);
- NaN and infinity are refused in every number;
- unknown keys are errors that name the closest known key, and a key listed in the class's
  `RENAMED` says what to write instead;
- checks between fields stay in the dataclass's own `__post_init__`.

Each field's help text lives in its metadata (`param(default, help)`), so `golf params` and every
command's `--help` print what the code reads, from one place.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from stages.errors import GolfError

Device = Literal["auto", "cpu", "cuda"]


class ConfigError(GolfError):
    """A params value or override that does not fit the schema."""


def check(cond: bool, message: str) -> None:
    """For the checks between fields in `__post_init__`."""
    if not cond:
        raise ConfigError(message)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True)
class Range:
    """Bounds of a number: `Annotated[float, Range(0, 1)]`; open ends exclude the bound."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return (f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}"
                    f"{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"


@dataclass(frozen=True)
class OnOff:
    """YAML reads a bare on/off as a boolean: map True to `on` and False to "off"."""

    on: str = "on"


def param(default: Any, help: str) -> Any:
    """A dataclass field with its help text; list and dict defaults are copied per instance."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default),
                                 metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


# ---------------------------------------------------------------------------------------------------
# Coercion
# ---------------------------------------------------------------------------------------------------

def _split_annotated(tp: Any) -> tuple[Any, tuple]:
    if typing.get_origin(tp) is Annotated:
        return tp.__origin__, tp.__metadata__
    return tp, ()


def _coerce_union(value: Any, tp: Any, key: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return coerce(value, arg, key)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"unsupported params type {tp!r} for {key}")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp` (with its choices and bounds), or a one-line error naming `key`."""
    tp, extras = _split_annotated(tp)
    for extra in extras:
        if isinstance(extra, OnOff) and isinstance(value, bool):
            value = extra.on if value else "off"
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; "
                              f"got {value!r}")
        out = value
    elif origin in (typing.Union, types.UnionType):
        out = _coerce_union(value, tp, key)
    elif origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        out = {coerce(k, key_tp, f"{key} key"): coerce(v, val_tp, f"{key}.{k}")
               for k, v in value.items()}
    elif origin in (list, tuple):
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        items = [coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        out = tuple(items) if origin is tuple else items
    else:
        out = _coerce_scalar(value, tp, key)
    for extra in extras:
        if isinstance(extra, Range) and out is not None and not extra.contains(out):
            raise ConfigError(f"{key} must be {extra}, got {out!r}")
    return out


def validate(obj: Any) -> None:
    """Coerce and check every field of a params dataclass in place (call it first thing in
    `__post_init__`); the class names its params section in `SECTION`."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        value = coerce(getattr(obj, f.name), hints[f.name], f"{obj.SECTION}.{f.name}")
        object.__setattr__(obj, f.name, value)


def build(cls: type, values: dict[str, Any] | None) -> Any:
    """The params dataclass `cls` from a mapping of its section's keys (values are checked by the
    class's own `validate` call)."""
    section = cls.SECTION
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"params section {section!r} must be a mapping, got {values!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    renamed = getattr(cls, "RENAMED", {})
    for key in values:
        if key in renamed:
            raise ConfigError(f"{section}.{key} is gone: {renamed[key]}")
        if key not in names:
            raise ConfigError(f"unknown key {section}.{key}{did_you_mean(str(key), names)} "
                              f"(known: {', '.join(sorted(names))})")
    return cls(**values)


def did_you_mean(word: str, choices) -> str:
    """' (did you mean X?)' for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-data view of a params dataclass (for artifact metadata and JSON)."""
    return dataclasses.asdict(obj)


# ---------------------------------------------------------------------------------------------------
# Documentation: what `golf params` and --help print
# ---------------------------------------------------------------------------------------------------

def type_text(tp: Any) -> str:
    """A short human name of a field's type: `float in [0, 1]`, `auto | cpu | cuda`, ..."""
    tp, extras = _split_annotated(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        text = " | ".join(map(str, typing.get_args(tp)))
    elif origin in (typing.Union, types.UnionType):
        text = " | ".join("null" if a is type(None) else type_text(a) for a in typing.get_args(tp))
    elif origin is dict:
        k, v = typing.get_args(tp)
        text = f"map of ({type_text(k)}) -> {type_text(v)}"
    elif origin in (list, tuple):
        text = f"list of {type_text(typing.get_args(tp)[0])}"
    else:
        text = getattr(tp, "__name__", str(tp))
    ranges = [str(e) for e in extras if isinstance(e, Range)]
    return " ".join([text, *ranges])


def field_docs(cls: type) -> list[dict[str, str]]:
    """Key, type, default and help of every field of a params dataclass, in definition order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out.append({"key": f.name, "type": type_text(hints[f.name]),
                    "default": json.dumps(default, default=list),
                    "help": f.metadata.get("help", "")})
    return out
