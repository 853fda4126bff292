"""Dependencies point one way: lower layers never import higher ones (checked on the import graph,
function-level imports included)."""

import pytest

from tests.import_graph import ROOT, module_closure

SOLVERS = {"stages/quant/gptq.py", "stages/quant/calibrate.py", "stages/quant/quantize.py",
           "stages/quant/grid.py", "stages/quant/rtn.py"}


def _modules(package: str) -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                  for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _hits(module: str, forbidden_prefixes: tuple[str, ...]) -> list[str]:
    return sorted(f for f in module_closure(module) if f.startswith(forbidden_prefixes))


@pytest.mark.parametrize("module", _modules("stages/codec"))
def test_codecs_never_import_the_quantizer(module):
    assert not _hits(module, ("stages/quant/", "stages/train/", "stages/eval/"))


@pytest.mark.parametrize("module", _modules("stages/eval"))
def test_eval_imports_no_solver_and_no_training(module):
    files = module_closure(module)
    assert not files & SOLVERS, sorted(files & SOLVERS)
    assert not _hits(module, ("stages/train/",))


@pytest.mark.parametrize("module", _modules("stages/train"))
def test_training_never_imports_quantizers_codecs_or_eval(module):
    assert not _hits(module, ("stages/quant/", "stages/codec/", "stages/eval/", "stages/tools/"))


@pytest.mark.parametrize("module", _modules("stages/model") + _modules("stages/data"))
def test_model_and_data_import_no_stage_above_them(module):
    assert not _hits(module, ("stages/train/", "stages/quant/", "stages/codec/", "stages/eval/",
                              "stages/tools/", "golfcli/"))


@pytest.mark.parametrize("module", ["stages.errors", "stages.files", "stages.params",
                                    "stages.tensorfile", "stages.budget", "stages.device"])
def test_foundations_are_leaves(module):
    own = f"{module.replace('.', '/')}.py"
    assert module_closure(module) - {own, "stages/__init__.py", "stages/errors.py"} == set()


def test_the_library_never_imports_the_cli():
    for module in _modules("stages"):
        assert not _hits(module, ("golfcli/",)), module


def test_one_module_reads_safetensors_headers():
    """The header format (an 8-byte length, then JSON) is parsed in stages/tensorfile.py only."""
    def reads_a_header(text: str) -> bool:  # a little-endian length, then JSON
        return "json.loads(" in text and any(f'int.from_bytes({arg}' in text and '"little")' in text
                                             for arg in ("data", "header", "raw", "buf"))
    readers = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "stages").rglob("*.py")
                     if reads_a_header(p.read_text()))
    assert readers == ["stages/tensorfile.py"]
