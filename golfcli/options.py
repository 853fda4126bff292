"""What every stage command shares: `--params` / `--set`, a help text listing its params keys, and
a progress bar that appears only once work starts."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from pathlib import Path

import click
from tqdm import tqdm

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


def stage_options(f):
    """--params and --set, shared by every stage command."""
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a params value (repeatable); KEY is `key` for this stage's "
                          "section or `section.key`.")(f)
    f = click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="Params file [default: ./params.yaml if present, "
                                        "else built-in defaults].")(f)
    return f


def data_option(f):
    """--data DATA_DIR, for the commands that score validation data."""
    return click.option("--data", "data_dir", required=True,
                        type=click.Path(exists=True, file_okay=False, path_type=Path),
                        help="Data directory with val shards and the tokenizer.")(f)


def params_epilog(classes: dict[str, type]) -> str:
    """The --help epilog of a stage command: the keys of each params section it reads."""
    parts = []
    for section, cls in classes.items():
        keys = ", ".join(f.name for f in dataclasses.fields(cls))
        parts.append("\b\n" + "\n".join(textwrap.wrap(f"{section}: {keys}", 78,
                                                         subsequent_indent="  ")))
    sections = ", ".join(classes)
    return (f"Params: the {sections} section(s) of PARAMS (./params.yaml when present, else "
            f"built-in defaults; the command's last line says which).\n\n" + "\n\n".join(parts)
            + f"\n\n\b\nTypes, defaults and help of every key:\n  golf params {' '.join(classes)}")


class LazyBar:
    """A tqdm bar that appears only once work starts, so an early error stays a single line."""

    def __init__(self, total: int | None, desc: str, unit: str):
        self.total, self.desc, self.unit = total, desc, unit
        self.bar: tqdm | None = None

    def start(self, total: int | None = None) -> tqdm:
        if self.bar is None:
            # On a terminal a live bar; in logs (DVC, CI) a line every 10 s is plenty.
            self.bar = tqdm(total=total or self.total, desc=self.desc, unit=self.unit,
                            file=sys.stderr, dynamic_ncols=True,
                            mininterval=0.5 if sys.stderr.isatty() else 10.0)
        return self.bar

    def update(self, n: int = 1) -> None:
        self.start().update(n)

    def write(self, line: str) -> None:
        self.start().write(line, file=sys.stderr)

    def __enter__(self) -> LazyBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
