"""In-repo import closure of each CLI command: what a DVC stage's `deps` must list."""

from __future__ import annotations

import ast
from pathlib import Path

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


def command_closure(command_function: str) -> set[str]:
    """Repo-relative files a `golf` command runs: main.py's module level + the command's body."""
    main = ROOT / "golfcli" / "main.py"
    tree = ast.parse(main.read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == command_function]
    assert body, command_function
    mods = _imports(top) | _imports(body) | {"golfcli"}
    # main.py itself counts, but only its module level and this command's body are followed.
    return {str(p.relative_to(ROOT)) for p in closure(mods, seen={main})}
