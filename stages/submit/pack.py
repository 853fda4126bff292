"""The packed copy of each module in train_gpt.py: the same program in fewer bytes.

Rewrites of the syntax tree, then python-minifier (at a pinned version):

- errors: outside the modules the run's surroundings reach (`FULL_ERRORS`), a message keeps its
  values and the source line where its words are (`short_errors`);
- unused code: top-level functions and classes nothing names, and methods only bundle code could
  call that nothing names (`shake`);
- names: arguments no bundled call can pass by keyword become positional-only
  (`positional_only`), which lets the minifier rename them; `vars(x)` becomes `x.__dict__`, since
  the minifier renames nothing in a module that calls `vars`;
- annotations: dropped, except a dataclass's fields (which make it one), and those become `int`
  outside params classes (`plain_field_annotations`); docstrings, comments and help texts dropped.

Every rule is conservative: when the code could reach something by a name the rewrite cannot
see, the name stays. The bundle tests run the packed program and compare its model file with the
pipeline's, bit for bit.
"""

from __future__ import annotations

import ast
import builtins


class _DropHelp(ast.NodeTransformer):
    """`param(default, "help")` -> `param(default, "")`: the help is for `golf params`."""

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        if getattr(node.func, "id", None) == "param" and len(node.args) == 2:
            node.args[1] = ast.Constant("")
        return node


# Modules whose errors the run's surroundings can cause (no DATA_PATH, a wrong folder, tokenizer or
# device, a broken torchrun): their messages ship in full. Every other error comes from params or
# files the run made itself, checked with full messages when the bundle was built, so the packed
# copy keeps only each message's values and where its words are in golf's source (`_ShortErrors`).
FULL_ERRORS = ("stages.submit.entry", "stages.data.", "stages.device", "stages.train.distributed")


class _ShortErrors(ast.NodeTransformer):
    """`raise E(f"{a}: b {c}")` and `check(x, f"...")` -> `E(f"stages/m.py:LINE {a} {c}")`: the
    message's values stay, its words are at that line of the source that built the bundle."""

    def __init__(self, where: str):
        self.where = where

    def _short(self, msg: ast.expr, line: int) -> ast.expr:
        if isinstance(msg, ast.Constant) and isinstance(msg.value, str):
            return ast.Constant(f"{self.where}:{line}")
        if not isinstance(msg, ast.JoinedStr):
            return msg  # built some other way: left as it is
        values = [v for part in msg.values if isinstance(part, ast.FormattedValue)
                  for v in (ast.Constant(" "), part)]
        return ast.JoinedStr([ast.Constant(f"{self.where}:{line}"), *values])

    def visit_Raise(self, node: ast.Raise) -> ast.Raise:
        if isinstance(node.exc, ast.Call) and node.exc.args:
            node.exc.args[0] = self._short(node.exc.args[0], node.lineno)
        return node

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        if getattr(node.func, "id", None) == "check" and len(node.args) == 2:
            node.args[1] = self._short(node.args[1], node.lineno)
        return node


def short_errors(module: str, tree: ast.Module, where: str) -> ast.Module:
    """`tree` with short error messages naming `where` (its source file) unless `module` is one
    of FULL_ERRORS."""
    if module.startswith(FULL_ERRORS):
        return tree
    return _ShortErrors(where).visit(tree)


class _VarsAsDict(ast.NodeTransformer):
    """`vars(x)` -> `x.__dict__`, which it returns. python-minifier renames nothing in a module
    that calls vars, eval, exec, locals or globals (they may read names as strings), and a one-
    argument `vars` reads none of the caller's names."""

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        if getattr(node.func, "id", None) == "vars" and len(node.args) == 1 and not node.keywords:
            return ast.Attribute(node.args[0], "__dict__", ast.Load())
        return node


def plain_field_annotations(tree: ast.Module) -> None:
    """Each field annotation of a dataclass that is not a params section (no `SECTION`) becomes
    `int`: the dataclass machinery reads only ClassVar, InitVar and KW_ONLY from them, and only
    params classes have their types read (`stages.params.validate`)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef) \
                or not any("dataclass" in ast.unparse(d) for d in node.decorator_list):
            continue
        fields = [f for f in node.body if isinstance(f, ast.AnnAssign)]
        targets = [t for f in node.body if isinstance(f, ast.Assign) for t in f.targets]
        if any(getattr(t, "id", None) == "SECTION" for t in [f.target for f in fields] + targets):
            continue
        for f in fields:
            if not any(k in ast.unparse(f.annotation) for k in ("ClassVar", "InitVar", "KW_ONLY")):
                f.annotation = ast.Name("int", ast.Load())


def _external_names(tree: ast.Module) -> set[str]:
    """Names a module binds to code outside golf: its imports from other packages."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names
                    if not a.name.startswith("stages")}
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("stages"):
            out |= {a.asname or a.name for a in node.names}
    return out


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node


# Functions outside golf that call what they are given with the keywords they are given.
FORWARDING = frozenset({"partial", "partialmethod", "replace"})


def keyword_receivers(trees: dict[str, ast.Module]) -> tuple[set[str], dict[str, set[str]]]:
    """Which argument names bundled code may pass by keyword, and to what: (names any function
    may receive, names per function or class name). A call's target is known when it is a name
    the bundle defines and never rebinds (`f(k=1)`, `mod.f(k=1)`, `obj.method(k=1)`: every
    definition of that name), and it is outside golf when the call goes to a builtin or an import
    from another package (`torch.zeros(dtype=...)`) that is not in FORWARDING and is handed none
    of golf's functions. Calling an argument that holds a class (`cls`, `x: type`) reaches some
    `__init__`. Any other call (a variable, a callback field, a higher-order function) may reach
    any function. A `**mapping` may hold any string the bundle spells."""
    defined: set[str] = set()
    stored: set[str] = set()  # names also used as variables or attributes: may hold anything
    strings: set[str] = set()
    classes: set[str] = set()  # arguments that hold a class: `cls`, `x: type`
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Store):
                stored.add(node.id if isinstance(node, ast.Name) else node.attr)
            elif isinstance(node, ast.arg):
                stored.add(node.arg)
                if node.annotation is not None and \
                        ast.unparse(node.annotation).split("[")[0] == "type":
                    classes.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
            if isinstance(node, ast.FunctionDef) and node.args.args and \
                    any(getattr(d, "id", None) == "classmethod" for d in node.decorator_list):
                classes.add(node.args.args[0].arg)
    known = defined - stored
    anyone: set[str] = set()
    by_name: dict[str, set[str]] = {}
    for tree in trees.values():
        external = (_external_names(tree) | set(dir(builtins))) - defined
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            names = {k.arg for k in node.keywords if k.arg}
            if any(k.arg is None for k in node.keywords):
                names |= strings
            handed = any(isinstance(v, ast.Name) and v.id in defined
                         or isinstance(v, ast.Attribute) and v.attr in defined
                         for v in [*node.args, *(k.value for k in node.keywords)])
            func, root = node.func, _root(node.func)
            target = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else None
            if handed or target in FORWARDING:  # may pass on what it is given, strings too
                anyone |= names | {c.value for c in ast.walk(node)
                                   if isinstance(c, ast.Constant) and isinstance(c.value, str)}
            elif isinstance(root, ast.Name) and root.id in external:
                continue  # code outside golf gets these keywords
            elif target in known:
                by_name.setdefault(target, set()).update(names)
            elif isinstance(func, ast.Name) and func.id in classes:  # constructs some class
                by_name.setdefault("__init__", set()).update(names)
            else:
                anyone |= names
    return anyone, by_name


def positional_only(trees: dict[str, ast.Module]) -> int:
    """Make each function's leading arguments positional-only where no bundled code could pass
    them by name (`keyword_receivers`); python-minifier renames only those of a function's
    arguments, since a caller may name the others. A class's `__init__` receives what its name
    and its subclasses' names are called with. Returns how many arguments were changed."""
    anyone, by_name = keyword_receivers(trees)
    classes = {n.name: n for tree in trees.values() for n in ast.walk(tree)
               if isinstance(n, ast.ClassDef)}

    def constructed_as(name: str) -> set[str]:
        """`name` and the names of the bundle's classes that inherit from it."""
        out, grew = {name}, True
        while grew:
            more = {c for c, node in classes.items() if c not in out
                    and any(isinstance(b, ast.Name) and b.id in out for b in node.bases)}
            out |= more
            grew = bool(more)
        return out

    changed = 0
    for tree in trees.values():
        owner = {f: c.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
                 for f in c.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            receives = anyone | by_name.get(node.name, set())
            if node.name == "__init__" and node in owner:
                receives = receives.union(*(by_name.get(c, set())
                                            for c in constructed_as(owner[node])))
            a = node.args
            lead = 0
            while lead < len(a.args) and a.args[lead].arg not in receives:
                lead += 1
            a.posonlyargs, a.args = a.posonlyargs + a.args[:lead], a.args[lead:]
            changed += lead
    return changed


def _names(node: ast.AST) -> set[str]:
    """Every name `node` uses: variables, attributes, imported names, and every string (a name
    may be looked up by one)."""
    out: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            out.add(sub.value)
        elif isinstance(sub, ast.Name):
            out.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            out.add(sub.attr)
        elif isinstance(sub, ast.ImportFrom):
            out.update(a.name for a in sub.names)
    return out


def _internal_classes(trees: dict[str, ast.Module]) -> set[str]:
    """Names of the bundle's classes whose bases are all bundle classes too: nothing outside the
    bundle (torch, Exception) calls their methods."""
    classes = {n.name: n for tree in trees.values() for n in tree.body
               if isinstance(n, ast.ClassDef)}
    internal: set[str] = set()
    while True:
        more = {name for name, c in classes.items() if name not in internal
                and all(isinstance(b, ast.Name) and b.id in internal for b in c.bases)}
        if not more:
            return internal
        internal |= more


def shake(trees: dict[str, ast.Module], keep: frozenset[str] = frozenset({"main"})) -> list[str]:
    """Drop the top-level functions and classes nothing else in the bundle names, and the methods
    (not dunders) of classes only bundle code calls, until none is left; returns what was dropped.
    Conservative: a name used anywhere (as a variable, an attribute, an import or a string) keeps
    every definition of that name."""
    dropped: list[str] = []
    while True:
        used: set[str] = set(keep)
        for tree in trees.values():
            for node in tree.body:
                names = _names(node)
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.discard(node.name)  # a function calling itself does not keep it
                used |= names
        internal = _internal_classes(trees)
        before = len(dropped)
        for module, tree in trees.items():
            kept = []
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                        and node.name not in used:
                    dropped.append(f"{module}.{node.name}")
                    continue
                if isinstance(node, ast.ClassDef) and node.name in internal:
                    methods = [m for m in node.body if isinstance(m, ast.FunctionDef)
                               and not m.name.startswith("__") and m.name not in used]
                    dropped += [f"{module}.{node.name}.{m.name}" for m in methods]
                    node.body = [m for m in node.body if m not in methods] or [ast.Pass()]
                kept.append(node)
            tree.body = kept or [ast.Pass()]
        if len(dropped) == before:
            return dropped


def minify(tree: ast.Module, keep: set[str] = frozenset()) -> str:
    """The packed copy of one module: help texts, docstrings, comments and annotations (but a
    dataclass's field annotations) dropped, locals renamed, and module-level names renamed too
    unless in `keep` (the names other bundled modules use: they import them or read them as
    attributes)."""
    import python_minifier

    return python_minifier.minify(
        ast.unparse(_DropHelp().visit(tree)), remove_literal_statements=True, rename_locals=True,
        rename_globals=True, preserve_globals=sorted(keep), hoist_literals=False,
        remove_asserts=False, remove_debug=False,
        remove_annotations=python_minifier.RemoveAnnotationsOptions(
            remove_variable_annotations=True, remove_return_annotations=True,
            remove_argument_annotations=True, remove_class_attribute_annotations=False))


def minify_all(trees: dict[str, ast.Module], keep: frozenset[str] = frozenset({"main"})) -> dict:
    """Each module minified, keeping the module-level names any other module names (as a
    variable, an attribute or an import: conservative, as in `shake`) and those in `keep`."""
    names = {m: _names(tree) for m, tree in trees.items()}
    return {m: minify(tree, set(keep).union(*(n for o, n in names.items() if o != m)))
            for m, tree in trees.items()}


def pack_sources(trees: dict[str, ast.Module], where: dict[str, str]) -> tuple[dict, list[str]]:
    """Each module's packed source (module -> text), from its syntax tree and its source file's
    path (`where`, for error locations); and the definitions dropped as unused."""
    trees = {m: _VarsAsDict().visit(short_errors(m, tree, where[m])) for m, tree in trees.items()}
    dropped = shake(trees)
    positional_only(trees)
    for tree in trees.values():
        plain_field_annotations(tree)
    return minify_all(trees), dropped
