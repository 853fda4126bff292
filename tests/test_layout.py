"""Source layout rules: no module of the library or the CLI over 400 lines, no function over 80."""

import ast
from pathlib import Path

from tests.conftest import ROOT

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def violations(root: Path) -> list[str]:
    """Every breach of the rules among the .py files under root/stages and root/golfcli."""
    found = []
    for package in ("stages", "golfcli"):
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            text = path.read_text(encoding="utf-8")
            name = path.relative_to(root).as_posix()
            lines = len(text.splitlines())
            if lines > MAX_MODULE_LINES:
                found.append(f"{name}: {lines} lines (max {MAX_MODULE_LINES})")
            functions = [node for node in ast.walk(ast.parse(text, filename=name))
                         if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
            for node in sorted(functions, key=lambda n: n.lineno):  # nested ones too
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{name}:{node.lineno} {node.name}: {length} lines "
                                 f"(max {MAX_FUNCTION_LINES})")
    return found


def test_library_and_cli_keep_modules_and_functions_short():
    assert violations(ROOT) == []


def _function(name: str, body_lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(body_lines))
    return f"{indent}def {name}():\n{body}"


def test_the_rules_catch_long_modules_and_functions(tmp_path):
    (tmp_path / "stages" / "sub").mkdir(parents=True)
    (tmp_path / "golfcli").mkdir()
    (tmp_path / "stages" / "ok.py").write_text(_function("fine", 79))  # 80 lines: allowed
    (tmp_path / "stages" / "sub" / "long_function.py").write_text(_function("too_long", 80))
    methods = "class C:\n" + _function("method", 81, "    ") + \
        "\nasync def coro():\n" + "".join(f"    await x{i}\n" for i in range(81))
    (tmp_path / "golfcli" / "methods.py").write_text(methods)
    (tmp_path / "golfcli" / "long_module.py").write_text("x = 1\n" * 401)
    (tmp_path / "stages" / "__pycache__").mkdir()
    (tmp_path / "stages" / "__pycache__" / "cached.py").write_text("x = 1\n" * 500)
    assert violations(tmp_path) == [
        "stages/sub/long_function.py:1 too_long: 81 lines (max 80)",
        "golfcli/long_module.py: 401 lines (max 400)",
        "golfcli/methods.py:2 method: 82 lines (max 80)",
        "golfcli/methods.py:85 coro: 82 lines (max 80)",
    ]
