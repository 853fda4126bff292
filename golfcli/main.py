"""`golf`: the command group. Each command lives in its own module under golfcli/commands/ and is
imported only when it runs, so a DVC stage depends on its own command's file alone (and editing
`golf inspect` never reruns training)."""

from __future__ import annotations

import importlib

import click

from golfcli.options import CONTEXT
from stages import __version__
from stages.errors import GolfError

# Command name -> module under golfcli.commands; each module defines `command`.
COMMANDS = {
    "tokenize": "tokenize", "train": "train", "average": "average", "quantize": "quantize",
    "compress": "compress", "eval": "eval", "audit": "audit", "compare": "compare",
    "inspect": "inspect", "import": "import_", "params": "params", "submission": "submission",
}


class OneLineUsageError(click.UsageError):
    """A usage error (exit status 2) shown as one line, like every other error."""

    def show(self, file=None) -> None:
        where = f" (see `{self.ctx.command_path} --help`)" if self.ctx is not None else ""
        click.echo(f"Error: {self.format_message()}{where}", err=True)


class GolfGroup(click.Group):
    """Loads commands on demand and turns library errors into one-line messages, exit status 1
    (usage errors: one line too, exit status 2)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"golfcli.commands.{COMMANDS[name]}").command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OneLineUsageError:
            raise
        except click.UsageError as e:
            raise OneLineUsageError(e.format_message(), e.ctx) from None
        except GolfError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            name = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{name}{e.strerror or e}") from None
        except MemoryError:
            raise click.ClickException("out of memory (lower the sizes in the params)") from None


@click.group(cls=GolfGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="golf")
def cli():
    """Parameter golf as composable stages passing safetensors artifacts.

    \b
    tokenize -> train -> average -> quantize -> compress -> eval -> audit
    Run the whole pipeline with `dvc repro`; each stage reads its section of
    params.yaml (`golf params` lists every key).
    """


def main() -> None:
    cli(prog_name="golf")
