"""train_gpt.py: the golf modules a run needs, packed into one self-extracting file.

The modules are the import closure of entry.py (module- and function-level imports), less the
optional ones these params never reach (`OPTIONAL`: the ans codec for a zstd run, TTT for a chunked
eval...). Those are imported lazily where they are used, so leaving them out is safe; a run asked
for one anyway (GOLF_SET) stops with a one-line error naming it. Each module's packed copy is
made smaller (pack.py: short errors, unused code dropped, names shortened, by python-minifier at
a pinned version), the sources and the frozen params go into one JSON document, that is
compressed (the smaller of brotli-11 and lzma-9e) and stored as raw bytes in one string literal of
a short Latin-1 wrapper (PEP 263) that installs an import hook and runs `stages.submit.entry.main`.
Latin-1 maps every byte to one character, so only the few bytes a literal cannot hold as they are
get escaped (`latin1_literal`): about 1.2% over the compressed size, where base85 adds 25%. The
same params and sources give the same bytes. The repository's sources stay as they are.

The counted code of a run is the size of this file: `golf compress`, `golf audit` and
`golf quantize --target-bytes` build it for the run's params and measure it.
"""

from __future__ import annotations

import ast
import json
import lzma
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import brotli

from stages.codec.blob import ANS_CODECS
from stages.errors import GolfError
from stages.submit.pack import pack_sources

ROOT = Path(__file__).resolve().parent.parent.parent
ENTRY = "stages.submit.entry"


class BundleError(GolfError):
    """A bundle that cannot be built for these params."""


def _calibrates(p: dict) -> bool:
    from stages.params import build
    from stages.quant.params import QuantizeParams

    return build(QuantizeParams, p["quantize"]).needs_calibration()


def _ttt(p: dict) -> bool:
    return p["eval"]["mode"] == "ttt"


def _codes_spans(p: dict) -> bool:
    return p["compress"]["codec"] in ANS_CODECS or p["compress"]["layout"] != "plain"


# Modules a run may do without: module -> whether these (resolved) params need it.
OPTIONAL: dict[str, Callable[[dict], bool]] = {
    "stages.codec.ans": lambda p: p["compress"]["codec"] in ANS_CODECS,
    "stages.codec.columns": lambda p: p["compress"]["codec"] == "ans-columns",
    "stages.codec.contexts": lambda p: p["compress"]["codec"] == "ans-columns",
    "stages.codec.layouts": lambda p: p["compress"]["layout"] != "plain",
    "stages.codec.spans": _codes_spans,
    "stages.eval.ttt": _ttt,
    "stages.eval.ttt_document": lambda p: _ttt(p) and p["eval"]["ttt_lora_rank"] > 0,
    "stages.eval.ttt_global": lambda p: _ttt(p) and p["eval"]["ttt_lora_rank"] == 0,
    "stages.quant.allocate": lambda p: p["quantize"]["fisher_alpha"] > 0,
    "stages.quant.calibrate": _calibrates,
    "stages.quant.gptq": lambda p: p["quantize"]["method"] == "gptq",
    "stages.quant.lqer": lambda p: p["quantize"]["lqer_rank"] > 0,
    "stages.quant.rate": lambda p: p["quantize"]["gptq_rate_lambda"] > 0,
    "stages.train.resume": lambda p: p["train"]["checkpoint_every"] > 0,
}


# ---------------------------------------------------------------------------------------------------
# Which modules
# ---------------------------------------------------------------------------------------------------

def module_path(module: str) -> Path | None:
    """The source file of an in-repo `stages` module (a package's __init__.py), if any."""
    parts = module.split(".")
    if parts[0] != "stages":
        return None
    as_mod = ROOT.joinpath(*parts[:-1], parts[-1] + ".py")
    as_pkg = ROOT.joinpath(*parts, "__init__.py")
    return as_mod if as_mod.is_file() else as_pkg if as_pkg.is_file() else None


def _imported(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return set()


def imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(import-time, function-level) names a module imports: `a.b` and `a.b.c` for
    `from a.b import c`, since c may be a module. Import time is anything outside a function."""
    top: set[str] = set()
    nested: set[str] = set()
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        (nested if in_function else top).update(_imported(node))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack += [(child, inner) for child in ast.iter_child_nodes(node)]
    return top, nested


def _with_packages(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(start: set[str], skip: set[str] = frozenset()) -> dict[str, set[str]]:
    """In-repo modules reachable from `start` (packages included), each with its module-level
    in-repo imports; modules in `skip` are not entered."""
    found: dict[str, set[str]] = {}
    todo = [m for s in start for m in _with_packages(s)]
    while todo:
        mod = todo.pop()
        path = module_path(mod)
        if mod in found or mod in skip or path is None:
            continue
        top, nested = imports(ast.parse(path.read_text()))
        found[mod] = {m for t in top for m in _with_packages(t) if module_path(m)}
        todo += [m for n in top | nested for m in _with_packages(n)]
    return found


def bundle_modules(params: dict) -> list[str]:
    """The modules train_gpt.py holds for these params (plain data: section -> key -> value)."""
    skip = {m for m, needed in OPTIONAL.items() if not needed(params)}
    found = closure({ENTRY}, skip)
    for mod, top in sorted(found.items()):
        missing = sorted(top - found.keys())
        if missing:  # a module-level import cannot be left out: it would fail at start
            raise BundleError(f"{mod} imports {missing[0]} at module level; import it where it "
                              f"is used, or it cannot be left out of a bundle")
    return sorted(found)


# The payload: a JSON header (params, package names), then each module as RS name US source.
RS, US = "\x1e", "\x1f"
# The wrapper: an import hook serving the packed modules, then the entry point. `{codec}` is
# brotli or lzma, `{data}` the compressed payload as a Latin-1 literal (`latin1_literal`).
WRAPPER = """# coding: latin-1
import json,sys,importlib.abc as A,importlib.util as U,{codec}
H,*R={codec}.decompress({data}.encode('latin-1')).decode().split('\\x1e')
H=json.loads(H);M=dict(r.split('\\x1f',1)for r in R)
class L(A.MetaPathFinder,A.Loader):
 def find_spec(s,n,p,t=None):
  if n in M:return U.spec_from_loader(n,s,is_package=n in H['p'])
  if n.split('.')[0]=='stages':raise ImportError('this train_gpt.py was packed without '+n+', which this run needs: pack it for these params (golf submission)')
 def create_module(s,spec):return None
 def exec_module(s,m):exec(compile(M[m.__name__],'<train_gpt.py:'+m.__name__+'>','exec'),m.__dict__)
sys.meta_path.insert(0,L())
import stages.submit.entry as E
if __name__=='__main__':E.main(H['params'],__file__)
"""
_OCTAL_DIGITS = frozenset(b"01234567")


def latin1_literal(data: bytes) -> str:
    """A '''...''' literal for a Latin-1 source file whose `.encode('latin-1')` is `data`.

    Latin-1 maps every byte to one character, and a triple-quoted literal holds line feeds and
    lone quotes as they are, so only NUL, CR (which Python reads as a line end), the backslash,
    and a quote that a quote follows (or that ends the data) are escaped: about 1.2% more bytes,
    where base85 adds 25%. NUL is written \\0 unless an octal digit follows, which would extend it.
    """
    out = []
    for i, b in enumerate(data):
        after = data[i + 1] if i + 1 < len(data) else None
        if b == 0:
            out.append("\\x00" if after in _OCTAL_DIGITS else "\\0")
        elif b == 13:
            out.append("\\r")
        elif b == 92:
            out.append("\\\\")
        elif b == 39 and after in (39, None):
            out.append("\\'")
        else:
            out.append(chr(b))
    return "'''" + "".join(out) + "'''"


# The compressors a payload may take (the wrapper imports the chosen one's module by its name).
PAYLOAD_CODECS: dict[str, Callable[[bytes], bytes]] = {
    "brotli": lambda doc: brotli.compress(doc, mode=brotli.MODE_TEXT, quality=11, lgwin=24),
    "lzma": lambda doc: lzma.compress(doc, preset=9 | lzma.PRESET_EXTREME),
}


def payload_document(header: str, sources: dict[str, str]) -> bytes:
    """The document the wrapper unpacks: the header, then each module as RS name US source."""
    return (header + "".join(f"{RS}{m}{US}{s}" for m, s in sources.items())).encode()


@dataclass(frozen=True)
class Bundle:
    source: bytes  # the train_gpt.py file
    modules: list[str]
    dropped: list[str]  # definitions no bundled code names
    codec: str  # how the payload was compressed
    payload_bytes: int  # the minified sources and params, before compression


def run_params(sections: dict) -> dict:
    """The plain data a bundle freezes: every section a run reads (entry.SECTIONS), from the
    params dataclasses in `sections` (more may be given; they are left out)."""
    from stages.params import to_dict
    from stages.submit.entry import SECTIONS

    return {s: to_dict(sections[s]) for s in SECTIONS}


def _non_default(params: dict) -> dict:
    """The params that differ from the defaults of the bundled code, which fills in the rest:
    the same run, in fewer bytes."""
    from stages.params import to_dict
    from stages.submit.entry import SECTIONS

    defaults = {s: to_dict(cls()) for s, cls in SECTIONS.items()}
    return {s: {k: v for k, v in values.items() if defaults[s].get(k, defaults) != v}
            for s, values in params.items()}


def build_bundle(params: dict) -> Bundle:
    """train_gpt.py for `params` (every section, resolved to plain data)."""
    modules = bundle_modules(params)
    trees = {m: ast.parse(module_path(m).read_text()) for m in modules}
    where = {m: module_path(m).relative_to(ROOT).as_posix() for m in modules}
    sources, dropped = pack_sources(trees, where)
    packages = [m for m in modules if module_path(m).name == "__init__.py"]
    header = json.dumps({"p": packages, "params": _non_default(params)}, sort_keys=True,
                        separators=(",", ":"))
    if any(RS in s or US in s for s in sources.values()):
        raise BundleError("a module's source holds a payload separator character")
    doc = payload_document(header, sources)
    packed = {name: compress(doc) for name, compress in PAYLOAD_CODECS.items()}
    codec = min(packed, key=lambda c: (len(packed[c]), c))
    text = WRAPPER.format(codec=codec, data=latin1_literal(packed[codec]))
    return Bundle(text.encode("latin-1"), modules, dropped, codec, len(doc))
