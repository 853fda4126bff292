"""In-repo import closures: what a DVC stage's `deps` must list, and which way the library's
dependencies point.

A `golf` command runs golfcli/main.py (module level: the group loads commands lazily), then its own
module under golfcli/commands/. Inside the command function, an `if` on the command's own options
is followed only along the branch the DVC command line takes (`quantize --target-bytes`, which
needs the codecs, is never used by the pipeline), because the command line is part of the stage
definition; params are not (they can change under `dvc exp run`), so nothing depending on them is
pruned. Everything else is followed in full, function-level imports included.

    python -m tests.import_graph      # print each pipeline stage's code deps for dvc.yaml
"""

from __future__ import annotations

import ast
import os
import shlex
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("stages", "golfcli")


def module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    as_pkg = ROOT.joinpath(*parts, "__init__.py")
    as_mod = ROOT.joinpath(*parts[:-1], parts[-1] + ".py")
    return as_mod if as_mod.is_file() else as_pkg if as_pkg.is_file() else None


def _imports(nodes) -> set[str]:
    """Modules named by import statements among `nodes` (walked recursively)."""
    found: set[str] = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names)
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                found.add(sub.module)
                found.update(f"{sub.module}.{a.name}" for a in sub.names)
    return found


def closure(start_modules: set[str], seen: set[Path] | None = None) -> set[Path]:
    """Every in-repo file importing `start_modules` runs (package __init__ files included)."""
    files: set[Path] = set(seen or ())
    todo = list(start_modules)
    while todo:
        mod = todo.pop()
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            f = module_file(".".join(parts[:i]))
            if f is None or f in files:
                continue
            files.add(f)
            todo.extend(_imports([ast.parse(f.read_text())]))
    return files


def module_closure(module: str) -> set[str]:
    """Repo-relative files that importing library module `module` runs."""
    return {str(p.relative_to(ROOT)) for p in closure({module})}


# ---------------------------------------------------------------------------------------------------
# Commands, as a DVC stage's command line runs them
# ---------------------------------------------------------------------------------------------------

UNKNOWN = object()  # an `if` test that cannot be decided from the options alone


def _evaluate(test: ast.expr, values: dict):
    """The value of an `if` test over the command's options, or UNKNOWN."""
    if isinstance(test, ast.Name):
        return values.get(test.id, UNKNOWN)
    if isinstance(test, ast.Constant):
        return test.value
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        v = _evaluate(test.operand, values)
        return UNKNOWN if v is UNKNOWN else not v
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, right = _evaluate(test.left, values), _evaluate(test.comparators[0], values)
        if left is UNKNOWN or right is UNKNOWN:
            return UNKNOWN
        compare = {ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b,
                   ast.Gt: lambda a, b: a > b, ast.Lt: lambda a, b: a < b,
                   ast.GtE: lambda a, b: a >= b, ast.LtE: lambda a, b: a <= b,
                   ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b}
        op = compare.get(type(test.ops[0]))
        return UNKNOWN if op is None else op(left, right)
    return UNKNOWN


def _taken(statements: list[ast.stmt], values: dict) -> list[ast.stmt]:
    """The statements a run with these option values can reach (both branches when undecidable)."""
    out = []
    for stmt in statements:
        if isinstance(stmt, ast.If):
            decided = _evaluate(stmt.test, values)
            if decided is UNKNOWN:
                out += _taken(stmt.body, values) + _taken(stmt.orelse, values)
            else:
                out += _taken(stmt.body if decided else stmt.orelse, values)
        else:
            out.append(stmt)
    return out


def command_closure(argv: list[str]) -> set[str]:
    """Repo-relative files that `golf <argv>` runs."""
    import click

    from golfcli.main import COMMANDS, cli

    name, args = argv[0], argv[1:]
    command = cli.get_command(click.Context(cli), name)
    with tempfile.TemporaryDirectory() as tmp:  # folder arguments must exist to parse
        for arg in args:
            if "/" in arg and not Path(arg).suffix:
                (Path(tmp) / arg).mkdir(parents=True, exist_ok=True)
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            values = command.make_context(name, list(args)).params
        finally:
            os.chdir(cwd)
    path = ROOT / "golfcli" / "commands" / f"{COMMANDS[name]}.py"
    tree = ast.parse(path.read_text())
    nodes: list[ast.AST] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "command":
            nodes += _taken(node.body, values)
        else:
            nodes.append(node)
    main = ROOT / "golfcli" / "main.py"
    main_imports = _imports([n for n in ast.parse(main.read_text()).body
                             if isinstance(n, (ast.Import, ast.ImportFrom))])
    files = closure(_imports(nodes) | main_imports | {"golfcli.commands"}, seen={main, path})
    return {str(p.relative_to(ROOT)) for p in files}


def stage_argv(cmd: str) -> list[str]:
    """`golf <args>` of a dvc.yaml command, without the leading `golf`."""
    argv = shlex.split(cmd)
    assert argv[0] == "golf", cmd
    return argv[1:]


def collapse(files: set[str]) -> list[str]:
    """`files` with every folder whose .py files are all in `files` listed as the folder."""
    out: set[str] = set(files)
    for folder in sorted({str(Path(f).parent) for f in files}, key=len, reverse=True):
        members = {str(p.relative_to(ROOT)) for p in (ROOT / folder).glob("*.py")}
        if members <= out and not any(p.is_dir() and p.name != "__pycache__"
                                      for p in (ROOT / folder).iterdir()):
            out = (out - members) | {folder}
    return sorted(out)


if __name__ == "__main__":
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, spec in stages.items():
        print(f"{stage}:")
        for dep in collapse(command_closure(stage_argv(spec["cmd"]))):
            print(f"      - {dep}")
