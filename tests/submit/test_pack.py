"""The packed copy of a module: smaller, and the same program."""

import ast
import textwrap

import pytest

from stages.submit.pack import pack_sources, positional_only

# One module exercising each rewrite; main() returns what every path computes.
PROGRAM = textwrap.dedent('''
    import dataclasses
    import json
    from dataclasses import dataclass
    from typing import ClassVar

    def by_keyword(first_arg, named_arg):
        return first_arg - named_arg

    def by_position(only_positional):
        return only_positional * 2

    def through_callback(callback_arg):
        return callback_arg + 1

    def call_back(fn):
        return fn(callback_arg=4)

    def through_splat(splatted_arg):
        return splatted_arg * 3

    def outside_keyword(sort_keys):
        return json.dumps({"b": 1, "a": sort_keys}, sort_keys=True)

    class Built:
        def __init__(self, built_arg):
            self.value = built_arg

        def unused_method(self):
            return 0

    class Child(Built):
        pass

    def construct(cls: type, values):
        return cls(**values)

    @dataclass
    class Plain:
        plain_field: list[str]
        other_field: int = 2

    @dataclass
    class Section:
        SECTION: ClassVar[str] = "s"
        typed_field: list[str]

    class Failure(Exception):
        def raised_method(self):
            return 1

    def with_vars(thing):
        local_name = vars(thing)
        return sorted(local_name)

    def main():
        return (by_keyword(5, named_arg=2), by_position(3), call_back(through_callback),
                through_splat(**{"splatted_arg": 2}), outside_keyword(7),
                construct(Child, {"built_arg": 9}).value,
                dataclasses.replace(Plain(["x"]), other_field=5).other_field,
                Section(["y"]).typed_field, with_vars(Plain(["z"])))
''')


def _run(source: str):
    namespace: dict = {}
    exec(compile(source, "<packed>", "exec"), namespace)  # noqa: S102 (the program under test)
    return namespace["main"]()


def _pack(source: str) -> tuple[str, list[str]]:
    sources, dropped = pack_sources({"m": ast.parse(source)}, {"m": "m.py"})
    return sources["m"], dropped


def test_the_packed_program_computes_what_the_source_does():
    packed, _ = _pack(PROGRAM)
    assert _run(packed) == _run(PROGRAM)
    assert len(packed) < 0.8 * len(PROGRAM)


def test_arguments_are_renamed_only_where_no_call_can_name_them():
    packed, _ = _pack(PROGRAM)
    renamed = {"first_arg", "only_positional", "local_name", "thing"}
    kept = {"named_arg", "callback_arg", "splatted_arg", "built_arg"}
    assert not {name for name in renamed if name in packed}
    assert kept <= {name for name in kept if name in packed}


def test_unused_methods_go_unless_code_outside_the_bundle_may_call_them():
    _, dropped = _pack(PROGRAM)
    assert "m.Built.unused_method" in dropped
    assert not [d for d in dropped if "raised_method" in d]  # an Exception subclass


def test_params_classes_keep_their_field_types():
    packed, _ = _pack(PROGRAM)
    assert "typed_field:list[str]" in packed.replace(" ", "")
    assert "plain_field:int" in packed.replace(" ", "")


def test_a_keyword_in_another_module_keeps_the_argument_named():
    trees = {"stages.a": ast.parse("def target(kept_name, other_name):\n    return kept_name\n"),
             "stages.b": ast.parse("from stages import a\n"
                                   "def main():\n    return a.target(1, other_name=2)\n")}
    positional_only(trees)
    args = trees["stages.a"].body[0].args
    assert [a.arg for a in args.posonlyargs] == ["kept_name"]
    assert [a.arg for a in args.args] == ["other_name"]


@pytest.mark.parametrize("call, named", [
    ("f(k=1)", True), ("obj.f(k=1)", True), ("callback(k=1)", True), ("g(f, k=1)", True),
    ("partial(f, k=1)", True), ("f(**{'k': 1})", True), ("json.dumps(f, k=1)", True),
    ("json.dumps(f, kwargs={'k': 1})", True),
    ("json.dumps(x, k=1)", False), ("sorted(x, k=1)", False), ("cls(k=1)", False)])
def test_every_way_of_naming_an_argument_keeps_it(call, named):
    """`named`: whether the call may pass f's argument k by name. A call to code outside golf
    that is handed none of golf's functions cannot; calling a class reaches only __init__."""
    source = (f"import json\nfrom functools import partial\ndef f(k):\n    return k\n"
              f"def g(fn, k):\n    return fn(k)\n"
              f"def use(obj, callback, cls: type, x):\n    return {call}\n")
    trees = {"m": ast.parse(source)}
    positional_only(trees)
    f = trees["m"].body[2]
    assert [a.arg for a in f.args.args] == (["k"] if named else []), call


def test_calling_a_class_argument_keeps_every_init_argument_named():
    source = ("class C:\n    def __init__(self, k):\n        self.k = k\n"
              "def make(cls: type):\n    return cls(k=1)\n")
    trees = {"m": ast.parse(source)}
    positional_only(trees)
    init = trees["m"].body[0].body[0]
    assert [a.arg for a in init.args.posonlyargs] == ["self"]
    assert [a.arg for a in init.args.args] == ["k"]
