"""Fault injection: each command killed at each of its write, rename and delete points, and a full
disk at each of its writes.

A kill is simulated in a forked child that leaves with `os._exit` at the chosen point, so, as with
kill -9, no `finally`, no cleanup and no flush runs; a write point is killed halfway through its
bytes. The points are the primitives of stages/files.py every write goes through (`_write`,
`rename`, `exchange`, `remove`). After each fault:

- no earlier output is lost: every watched file holds its earlier bytes or its complete new ones
  (the earlier run's files are kept until the new ones are in place), and files golf did not write
  are untouched;
- nothing partial sits under a final name;
- the next run cleans up (no `.NAME.*.tmp`, `.NAME.old` or `resume/` left) and succeeds, with the
  same outputs as an undisturbed run.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from golfcli.main import cli
from stages import files

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cached_bundles")]

KILLED = 137
POINTS = ("_write", "rename", "exchange", "remove")

# Earlier outputs come from EARLIER, the runs under test use PARAMS: every output changes.
PARAMS = """
model: {vocab_size: 400, num_layers: 1, model_dim: 32, num_heads: 2, num_kv_heads: 1}
tokenize: {vocab_size: 400}
train: {max_steps: 4, max_wallclock_seconds: 0, batch_tokens: 256, seq_len: 32, schedule: steps,
        checkpoint_every: 2, swa_every: 2, swa_lr_scale: 0.9, warmdown_frac: 0.75,
        log_every: 2, autocast: "off"}
average: {weights: []}
quantize: {keep_float_max_numel: 256}
compress: {codec: zstd, level: 3}
eval: {seq_len: 32, batch_seqs: 16}
"""
EARLIER_CHANGES = {"max_steps: 4": "max_steps: 2, seed: 7", "weights: []": "weights: [1, 3]",
                   "max_numel: 256": "max_numel: 256, bits: 6", "level: 3": "level: 1",
                   "seq_len: 32, batch_seqs": "seq_len: 64, batch_seqs"}
EARLIER = PARAMS
for _old, _new in EARLIER_CHANGES.items():
    EARLIER = EARLIER.replace(_old, _new)


def golf(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@dataclass
class Scenario:
    name: str
    args: tuple
    watched: tuple[str, ...]  # files whose bytes must be earlier-or-new (deterministic ones)
    volatile: tuple[str, ...] = ()  # files with timings: earlier or any valid JSON
    untouched: tuple[str, ...] = ()  # files golf did not write
    folder: str | None = None  # an output folder that must be wholly earlier or wholly new
    extra: dict = field(default_factory=dict)


SCENARIOS = [
    Scenario("tokenize", ("tokenize", "--corpus", "b.jsonl", "--out", "data", "--params", "p.yaml"),
             (), folder="data"),
    Scenario("train", ("train", "data", "--out", "run", "--params", "p.yaml"),
             ("run/final.safetensors", "run/ema.safetensors", "run/swa/step_000002.safetensors",
              "run/swa/step_000004.safetensors", "run/live/plots/metrics/train/loss.tsv"),
             volatile=("run/train_metrics.json",), untouched=("run/notes.txt",)),
    Scenario("average", ("average", "run/final.safetensors", "run/ema.safetensors", "--out",
                         "avg.safetensors", "--params", "p.yaml"), ("avg.safetensors",)),
    Scenario("quantize", ("quantize", "avg.safetensors", "--out", "q.safetensors", "--params",
                          "p.yaml"), ("q.safetensors",)),
    Scenario("compress", ("compress", "q.safetensors", "--out", "m.golf", "--report", "size.json",
                          "--params", "p.yaml"), ("m.golf", "size.json")),
    Scenario("eval", ("eval", "m.golf", "--data", "data", "--out", "e.json", "--params", "p.yaml"),
             (), volatile=("e.json",)),
    Scenario("audit", ("audit", "m.golf", "--data", "data", "--json", "a.json", "--params",
                       "p.yaml", "--prefix-tokens", "96", "--samples", "1"), ("a.json",)),
]


@pytest.fixture(scope="module")
def base(tmp_path_factory, small_docs) -> Path:
    """A folder after a whole earlier pipeline (EARLIER params): what each command replaces."""
    root = tmp_path_factory.mktemp("faults") / "base"
    root.mkdir()
    for name, docs in (("a.jsonl", small_docs[:60]), ("b.jsonl", small_docs[:80])):
        (root / name).write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (root / "p.yaml").write_text(EARLIER)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        steps = [("tokenize", "--corpus", "a.jsonl", "--out", "data", "--params", "p.yaml")]
        steps += [s.args for s in SCENARIOS[1:]]
        for step in steps:
            r = golf(*step)
            assert r.exit_code == 0, (step, r.output)
    finally:
        os.chdir(cwd)
    (root / "run" / "notes.txt").write_text("not golf's")
    (root / "p.yaml").write_text(PARAMS)
    return root


def _files(root: Path, folder: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / folder).rglob("*"))
            if p.is_file()}


def _state(root: Path, s: Scenario) -> dict:
    watched = {w: (root / w).read_bytes() if (root / w).is_file() else None for w in s.watched}
    return {"watched": watched, "folder": _files(root, s.folder) if s.folder else None}


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith((".tmp", ".old")) or p.name == "resume")


class Injector:
    """Patches the primitives of stages/files.py: counts the points a run passes and, at point
    `at`, dies (kill) or fails the write (a full disk)."""

    def __init__(self, monkeypatch, at: int | None = None, action: str = "kill",
                 kinds: tuple[str, ...] = POINTS):
        self.count, self.at, self.action, self.seen = itertools.count(1), at, action, []
        for name in kinds:
            monkeypatch.setattr(files, name, self._hook(name, getattr(files, name)))

    def _hook(self, name, real):
        def point(*args):
            self.seen.append(name)
            if next(self.count) == self.at:
                if self.action == "enospc":
                    raise OSError(errno.ENOSPC, "No space left on device")
                if name == "_write":  # die halfway through the bytes
                    real(args[0], args[1][:len(args[1]) // 2])
                os._exit(KILLED)
            return real(*args)
        return point


def _killed(monkeypatch, work: Path, args: tuple, at: int, kinds=POINTS) -> int:
    """Run `golf args` in a forked child that dies at point `at`; its exit status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.chdir(work)
            Injector(monkeypatch, at, "kill", kinds)
            code = golf(*args).exit_code
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _prepare(base: Path, tmp_path: Path, s: Scenario, monkeypatch) -> tuple[dict, dict, int]:
    """(earlier state, undisturbed state, number of points) of a scenario."""
    ref = tmp_path / "ref"
    shutil.copytree(base, ref, symlinks=True)
    earlier = _state(ref, s)
    monkeypatch.chdir(ref)
    with monkeypatch.context() as m:
        counter = Injector(m)
        r = golf(*s.args)
    assert r.exit_code == 0, r.output
    monkeypatch.chdir(tmp_path)
    return earlier, _state(ref, s), len(counter.seen)


def _check_after_fault(work: Path, s: Scenario, earlier: dict, new: dict, base: Path) -> None:
    for name, before in earlier["watched"].items():
        now = (work / name).read_bytes() if (work / name).is_file() else None
        assert now in (before, new["watched"][name]), f"{name} is partial or lost"
    for name in s.volatile:
        if (work / name).is_file():
            json.loads((work / name).read_text())  # complete, whichever run wrote it
        else:
            assert not (base / name).is_file(), f"{name} was lost"
    for name in s.untouched:
        assert (work / name).read_bytes() == (base / name).read_bytes()
    if s.folder:
        assert _files(work, s.folder) in (earlier["folder"], new["folder"]), "folder mixed or lost"


def _check_next_run(work: Path, s: Scenario, new: dict, monkeypatch) -> None:
    monkeypatch.chdir(work)
    r = golf(*s.args)
    assert r.exit_code == 0, r.output
    assert _state(work, s) == new
    assert _leftovers(work) == []


@pytest.mark.parametrize("s", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_killed_at_every_point_loses_nothing_and_the_next_run_recovers(s, base, tmp_path,
                                                                      monkeypatch):
    earlier, new, n = _prepare(base, tmp_path, s, monkeypatch)
    assert n >= 2
    for at in range(1, n + 1):
        work = tmp_path / f"kill{at}"
        shutil.copytree(base, work, symlinks=True)
        assert _killed(monkeypatch, work, s.args, at) == KILLED, at
        _check_after_fault(work, s, earlier, new, base)
        _check_next_run(work, s, new, monkeypatch)
        shutil.rmtree(work)


@pytest.mark.parametrize("s", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_a_full_disk_at_every_write_is_one_line_naming_the_file(s, base, tmp_path, monkeypatch):
    earlier, new, _ = _prepare(base, tmp_path, s, monkeypatch)
    with monkeypatch.context() as m:
        counter = Injector(m, kinds=("_write",))
        monkeypatch.chdir(tmp_path / "ref")
        golf(*s.args)
    for at in range(1, len(counter.seen) + 1):
        work = tmp_path / f"full{at}"
        shutil.copytree(base, work, symlinks=True)
        monkeypatch.chdir(work)
        with monkeypatch.context() as m:
            Injector(m, at, "enospc", kinds=("_write",))
            r = golf(*s.args)
        assert r.exit_code == 1, r.output
        line = r.stderr.strip().splitlines()[-1]
        assert line.startswith("Error: ") and line.endswith(": No space left on device"), line
        assert _state(work, s) == earlier  # a failed run replaced nothing
        _check_next_run(work, s, new, monkeypatch)
        shutil.rmtree(work)


def test_tokenize_without_an_atomic_exchange_recovers_from_a_kill_between_its_renames(
        base, tmp_path, monkeypatch):
    """Where the filesystem cannot swap two folders at once, the older one is set aside first;
    killed in between, --out is missing until the next run puts it back or replaces it."""
    s = SCENARIOS[0]
    monkeypatch.setattr(files, "exchange", lambda a, b: False)
    earlier, new, n = _prepare(base, tmp_path, s, monkeypatch)
    for at in range(1, n + 1):
        work = tmp_path / f"kill{at}"
        shutil.copytree(base, work, symlinks=True)
        assert _killed(monkeypatch, work, s.args, at) == KILLED
        if not (work / "data").exists():  # between the two renames: the older copy is aside
            assert _files(work, ".data.old") == {k.replace("data/", ".data.old/", 1): v
                                                 for k, v in earlier["folder"].items()}
            files.remove_stale(work / "data")  # what the next write to it does first
        _check_after_fault(work, s, earlier, new, base)
        _check_next_run(work, s, new, monkeypatch)
        shutil.rmtree(work)


def _destination(temporary: str) -> str:
    """`final.safetensors` of `.final.safetensors.x1y2z3.tmp`."""
    return temporary[1:].rsplit(".", 2)[0] if temporary.endswith(".tmp") else temporary


def test_a_full_disk_at_the_final_write_keeps_the_resume_state(base, tmp_path, monkeypatch):
    """D1: the run's resume state outlives a failed final write, and --resume finishes the run."""
    s = SCENARIOS[1]
    _prepare(base, tmp_path, s, monkeypatch)
    written = []
    with monkeypatch.context() as m:
        real = files._write
        m.setattr(files, "_write", lambda p, d: (written.append(_destination(p.name)), real(p, d)))
        shutil.rmtree(tmp_path / "ref")
        shutil.copytree(base, tmp_path / "ref", symlinks=True)
        monkeypatch.chdir(tmp_path / "ref")
        assert golf(*s.args).exit_code == 0
    work = tmp_path / "work"
    shutil.copytree(base, work, symlinks=True)
    monkeypatch.chdir(work)
    earlier = (work / "run/final.safetensors").read_bytes()
    with monkeypatch.context() as m:
        Injector(m, written.index("final.safetensors") + 1, "enospc", kinds=("_write",))
        r = golf(*s.args)
    assert r.exit_code == 1 and "final.safetensors: No space left on device" in r.output
    assert (work / "run/resume/state.pt").is_file()  # the run is not lost
    assert (work / "run/final.safetensors").read_bytes() == earlier
    r = golf(*s.args, "--resume")
    assert r.exit_code == 0, r.output
    assert (work / "run/final.safetensors").read_bytes() == \
        (tmp_path / "ref/run/final.safetensors").read_bytes()
    assert _leftovers(work) == []
