"""`golf import`: a state dict saved by the public baseline train_gpt.py becomes a checkpoint."""

import json

import pytest
import torch
from click.testing import CliRunner

from golfcli.main import cli
from stages import artifacts
from stages.files import sha256_file
from stages.model.config import ModelConfig
from stages.model.gpt import GPT, build_model, roles_for
from stages.tools.importer import BaselineImportError, import_baseline

# Every shape value differs from the defaults (and an odd layer count exercises skip_weights), so a
# value taken from the defaults instead of the weights cannot pass unnoticed.
SHAPES = dict(vocab_size=96, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=3)
PARAMS = "model: {logit_softcap: 20.0, rope_base: 500.0}\n"


def golf(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def baseline_state(prefix: str = "", seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the baseline's names, matrices in bf16 and control tensors in fp32."""
    torch.manual_seed(seed)
    state = {}
    roles = roles_for(ModelConfig(**SHAPES))
    for name, t in GPT(ModelConfig(**SHAPES)).state_dict().items():
        value = torch.randn_like(t) * 0.2  # random everywhere: zero-init projections would hide a
        if roles[name].kind != "control":  # mixed-up name mapping
            value = value.bfloat16()
        state[prefix + name] = value
    return state


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    d = tmp_path_factory.mktemp("import")
    (d / "params.yaml").write_text(PARAMS)
    state = baseline_state(prefix="_orig_mod.")  # as saved from a torch.compile'd model
    torch.save(state, d / "final_model.pt")
    r = golf("import", d / "final_model.pt", "--out", d / "ckpt.safetensors", "--params",
             d / "params.yaml")
    assert r.exit_code == 0, r.output
    assert "3L x 32" in r.output
    return d, state


def test_infers_the_config_and_keeps_the_logits(imported):
    d, state = imported
    ckpt = artifacts.load(d / "ckpt.safetensors", expect="checkpoint")
    cfg = ModelConfig(**SHAPES, logit_softcap=20.0, rope_base=500.0)
    assert ckpt.model_config == cfg
    assert all(t.dtype == torch.float32 for t in ckpt.tensors.values())
    direct = GPT(cfg)
    direct.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in state.items()}, strict=True)
    idx = torch.randint(0, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(build_model(ckpt.model_config, ckpt.tensors)(idx), direct(idx))


def test_inspect_shows_the_provenance(imported):
    d, _ = imported
    info = json.loads(golf("inspect", d / "ckpt.safetensors", "--json").output)
    source_sha = sha256_file(d / "final_model.pt")
    assert info["provenance"] == {"imported_from": str(d / "final_model.pt"),
                                  "source_sha256": source_sha,
                                  "source_format": "parameter-golf train_gpt.py state_dict"}
    assert info["parents"] == {"source": source_sha}
    assert info["params"]["model"]["logit_softcap"] == 20.0
    text = golf("inspect", d / "ckpt.safetensors").output
    assert "provenance imported_from:" in text and "blocks.2.mlp.fc.weight" in text


def test_quantize_accepts_the_import(imported):
    d, _ = imported
    r = golf("quantize", d / "ckpt.safetensors", "--out", d / "q.safetensors", "--params",
             d / "params.yaml", "--set", "keep_float_max_numel=256")
    assert r.exit_code == 0, r.output
    assert "int8" in r.output and "int_per_row" in r.output


def test_ddp_prefix_and_help():
    state = baseline_state(prefix="module.")
    ckpt = import_baseline(state, {}, source="mem", source_sha256="sha256:0")
    assert set(ckpt.tensors) == {k.removeprefix("module.") for k in state}
    assert ckpt.model_config == ModelConfig(**SHAPES)  # defaults for what the weights cannot tell
    assert "  import " in golf("--help").output
    assert "weights_only" in golf("import", "--help").output


class OpensAFile:
    """Unpickling this (unrestricted) would create `path`: the import must never do that."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _without(name):
    state = baseline_state()
    del state[name]
    return state


def _reshaped(name, rows):
    state = baseline_state()
    state[name] = torch.zeros(rows, state[name].shape[1])
    return state


BAD = {
    "unsafe": (lambda tmp: {**baseline_state(), "hook": OpensAFile(tmp / "pwned")}, (),
               "refused: the pickle references"),
    "nested": (lambda tmp: {"model": baseline_state(), "step": 7}, (),
               "not a state dict of tensors ('model' is dict"),
    "untied": (lambda tmp: {**baseline_state(), "lm_head.weight": torch.zeros(96, 32)}, (),
               "lm_head.weight, an untied output head"),
    "missing": (lambda tmp: _without("blocks.1.mlp.fc.weight"), (),
                "missing blocks.1.mlp.fc.weight"),
    "unexpected": (lambda tmp: {**baseline_state(), "bigram.weight": torch.zeros(4, 4)}, (),
                   "unexpected bigram.weight"),
    "shape": (lambda tmp: _reshaped("blocks.2.attn.c_k.weight", 24), (),
              "shape mismatch: blocks.2.attn.c_k.weight [24, 32] (expected [16, 32])"),
    "contradiction": (lambda tmp: baseline_state(), ("--set", "model.model_dim=64"),
                      "model.model_dim=64 in the params contradict the weights (model_dim=32)"),
    "bad_value": (lambda tmp: baseline_state(), ("--set", "model.logit_softcap=-1"),
                  "model.logit_softcap must be > 0"),
    "not_torch": (lambda tmp: b"\x8d not a checkpoint", (), "not a readable PyTorch checkpoint"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sources_fail_in_one_line_and_write_nothing(case, tmp_path):
    make, extra, needle = BAD[case]
    source = tmp_path / "final_model.pt"
    content = make(tmp_path)
    if isinstance(content, bytes):
        source.write_bytes(content)
    else:
        torch.save(content, source)
    (tmp_path / "params.yaml").write_text(PARAMS)
    out = tmp_path / "out" / "ckpt.safetensors"
    r = golf("import", source, "--out", out, "--params", tmp_path / "params.yaml", *extra)
    assert r.exit_code == 1, r.output
    assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("Error: "), r.output
    assert needle in r.output, r.output
    assert not out.parent.exists() and not (tmp_path / "pwned").exists()


def test_shape_keys_come_from_the_weights_not_the_params_file(tmp_path):
    """The project's params.yaml describes the model golf trains: its shape keys are ignored, while
    a shape value given explicitly with --set must match the weights."""
    torch.save(baseline_state(), tmp_path / "final_model.pt")
    (tmp_path / "p.yaml").write_text("model: {num_layers: 4, model_dim: 32, mlp_mult: 2, "
                                     "logit_softcap: 20.0}\n")
    r = golf("import", tmp_path / "final_model.pt", "--out", tmp_path / "c.safetensors",
             "--params", tmp_path / "p.yaml")
    assert r.exit_code == 0, r.output
    info = json.loads(golf("inspect", tmp_path / "c.safetensors", "--json").output)
    assert info["model_config"]["num_layers"] != 4 and info["model_config"]["logit_softcap"] == 20.0
    r = golf("import", tmp_path / "final_model.pt", "--out", tmp_path / "d.safetensors",
             "--params", tmp_path / "p.yaml", "--set", "model.num_layers=4")
    assert r.exit_code == 1
    assert "model.num_layers=4 in the params contradict" in r.output
    with pytest.raises(BaselineImportError, match="contradict"):
        import_baseline(baseline_state(), {"num_heads": 8}, source="mem", source_sha256="x")
