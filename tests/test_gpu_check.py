"""benchmarks/gpu_check.py: its dry run walks every section on the CPU at toy size, so the script
the rare GPU runs depend on cannot rot; a failing or hung section is recorded and the run ends."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import time
import types

import pytest
import torch

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


def _run(tmp_path, *args, timeout=240):
    out = tmp_path / "gpu_check.json"
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *args]
    done = subprocess.run(cmd, check=False, cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout)
    return done, json.loads(out.read_text())


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and x > 0


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("gpu_check"))


def test_the_dry_run_measures_every_section(dry_run):
    done, report = dry_run
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    s = report["sections"]
    assert list(s) == list(gpu_check.SECTIONS)
    assert all(v["status"] == "ok" for v in s.values()), {k: v.get("error") for k, v in s.items()}
    assert _positive(s["peak"]["fp32_tflops"])
    for phase in (s["train_baseline"], s["train_best"]["before_looping"],
                  s["train_best"]["after_looping"]):
        assert _positive(phase["ms_per_step"]) and _positive(phase["tokens_per_s"])
        assert _positive(phase["flops_per_token"]) and _positive(phase["mfu"])
    looped, plain = (s["train_best"][k]["flops_per_token"]
                     for k in ("after_looping", "before_looping"))
    assert looped > plain  # the looped layers are counted once per pass
    g = s["gptq"]
    for key in ("calib_s", "gptq_s", "quantized_bytes", "compressed_bytes"):
        assert _positive(g[key]), key
    assert g["quantized_tensors"] > 0  # the toy run quantizes through GPTQ, not only keeps floats
    for mode in ("sliding", "ttt"):
        assert _positive(s["eval"][mode]["seconds"]) and _positive(s["eval"][mode]["windows_done"])
        assert _positive(s["eval"][mode]["projected_s_8gpu"])
    assert all(c["verdict"] == "PASS" for c in report["checks"]), report["checks"]


def test_every_budget_line_has_a_verdict_in_the_json_and_the_table(dry_run):
    done, report = dry_run
    names = [b["name"] for b in report["budget"]]
    assert any("tokens/s per GPU before looping" in n for n in names)
    assert any(n.startswith("eval ttt") for n in names)
    assert any(n.startswith("GPTQ") for n in names)
    for line in report["budget"]:
        assert line["verdict"] in ("PASS", "FAIL")
        assert _positive(line["value"]), line
        printed = [row for row in done.stdout.splitlines() if row.startswith(line["name"])]
        assert printed and (" PASS" in printed[0] or " FAIL" in printed[0])


def test_the_dry_run_claims_no_gpu_result(dry_run):
    done, report = dry_run
    assert report["dry_run"] is True and report["device"] == "cpu"
    assert report["gpu_results"] is False and "DRY RUN" in report["note"]
    assert "DRY RUN" in done.stdout
    assert not {"click", "dvc", "dvclive"} & set(report["imported"])


def test_a_failing_section_is_recorded_and_the_run_goes_on(tmp_path):
    done, report = _run(tmp_path, "--only", "peak,nccl,train_baseline", "--fail", "nccl")
    assert done.returncode == 1
    s = report["sections"]
    assert s["nccl"]["status"] == "error" and "injected failure" in s["nccl"]["error"]
    assert s["peak"]["status"] == s["train_baseline"]["status"] == "ok"
    lines = {b["name"]: b for b in report["budget"]}
    assert lines["baseline tokens/s per GPU"]["value"] > 0
    missing = [b for b in report["budget"] if b["value"] is None]
    assert missing and all(b["verdict"] == "FAIL" for b in missing)


def test_the_deadline_ends_a_hung_section(tmp_path):
    done, report = _run(tmp_path, "--only", "peak,nccl", "--hang", "nccl", "--deadline", "4",
                        timeout=60)
    assert done.returncode == 3
    assert report["sections"]["nccl"]["status"] == "error"
    assert report["stopped"] == "overall deadline passed" and report["wall_s"] < 10
    assert len(report["budget"]) == len(gpu_check.budget_lines(report, *_presets()))


def _presets():
    return gpu_check.load_preset("baseline", False), gpu_check.load_preset("best", False)


def test_budget_lines_pass_at_the_bars_and_fail_without_a_measurement():
    phase = {"tokens_per_s": 1.2e6, "ms_per_step": 80.0, "mfu": 0.4}
    report = {"wall_s": 400.0, "sections": {
        "train_baseline": {"tokens_per_s": 1.6e6, "ms_per_step": 40.0, "mfu": 0.25},
        "train_best": {"before_looping": phase, "after_looping": {**phase, "tokens_per_s": 9e5,
                                                                  "ms_per_step": 110.0}},
        "gptq": {"calib_s": 4.0},
        "eval": {"sliding": {"projected_s_8gpu": 80.0}, "ttt": {"projected_s_8gpu": 590.0}}}}
    lines = gpu_check.budget_lines(report, *_presets())
    assert [b["verdict"] for b in lines] == ["PASS"] * len(lines)
    report["sections"]["eval"]["ttt"]["projected_s_8gpu"] = 601.0
    del report["sections"]["gptq"]
    verdicts = {b["name"]: b["verdict"] for b in gpu_check.budget_lines(report, *_presets())}
    assert verdicts["GPTQ Hessians inside the training budget"] == "FAIL"
    assert [v for n, v in verdicts.items() if n.startswith("eval ttt")] == ["FAIL"]


def test_full_size_presets_match_the_issue():
    baseline, best = _presets()
    assert baseline.train.batch_tokens // gpu_check.N_GPUS == 65_536
    assert best.train.batch_tokens // gpu_check.N_GPUS == 98_304 and best.train.seq_len == 2048
    assert best.model.num_layers == 11 and best.model.num_loops > 0
    assert best.model.parallel_residual == "two_lane"


def test_flops_per_token_is_train_speeds_count_for_a_plain_layout():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import train_speed
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    baseline, best = _presets()
    for p in (baseline, best):
        assert gpu_check.flops_per_token(p.model, 1024, looping=False) == \
            train_speed.flops_per_token(p.model, 1024)


def test_synthetic_validation_documents_start_with_bos():
    from stages.data.shards import BOS_ID

    ids = gpu_check.synthetic_val(20_000, 512, 100.0)
    assert ids.size == 20_001 and ids[0] == BOS_ID and ids.max() < 512
    starts = (ids == BOS_ID).nonzero()[0]
    gaps = starts[1:] - starts[:-1]
    assert gaps.min() >= 16 and 70 < gaps.mean() < 140


def test_a_failed_compile_is_recorded_and_training_reruns_eager(monkeypatch):
    calls = []

    def fake_run(c, preset, params, until):
        calls.append(params.compile)
        if params.compile == "on":
            raise RuntimeError("inductor: no C compiler\nmore")
        return [2.0, 0.1, 0.1], False

    monkeypatch.setattr(gpu_check, "_run_train", fake_run)
    baseline, _ = _presets()
    params = dataclasses.replace(baseline.train, compile="on")
    out = {}
    check = types.SimpleNamespace(device=torch.device("cpu"))
    steps = gpu_check._train(check, baseline, params, time.perf_counter() + 60, out)
    assert calls == ["on", "off"] and steps == [2.0, 0.1, 0.1]
    assert out["compile_error"] == "RuntimeError: inductor: no C compiler"
    assert out["compile"].startswith("off") and out["partial"] is False


def test_a_phase_of_only_the_compiling_step_reports_no_steady_state():
    check = types.SimpleNamespace(report={"sections": {"peak": {"bf16_tflops": 800.0}}}, cuda=True)
    assert gpu_check._phase(check, [30.0], 3, 65_536, 10**8)["ms_per_step"] is None
    cut = gpu_check._phase(check, [30.0, 0.05, 0.05], 3, 65_536, 10**8)  # budget hit at step 3
    assert cut["timed_steps"] == 2 and cut["ms_per_step"] == pytest.approx(50.0)
    assert cut["compile_s"] == pytest.approx(29.95) and cut["mfu"] > 0
