"""Roles: every parameter has exactly one, declared by its module, and every later stage (optimizer
groups, storage precision, quantization groups, TTT adapters) follows them."""

import pytest
import torch
from torch import nn

from golfcli.params import load_params
from stages.artifacts import Artifact
from stages.model.config import ModelConfig
from stages.model.gpt import GPT, roles_for
from stages.model.roles import (
    CONTROL,
    QUANT_GROUPS,
    HasRoles,
    RoleError,
    matrix,
    role_map,
)
from stages.quant.params import QuantizeParams
from stages.quant.quantize import quantize
from stages.train.optim import build_optimizers, split_parameters
from stages.train.params import TrainParams
from tests.conftest import BASE, EVERY_FEATURE, ROOT, randomise

PRESETS = sorted((ROOT / "configs").glob("*.yaml"))
CONFIGS = {p.stem: load_params(p, {"model": ModelConfig})["model"] for p in PRESETS}
CONFIGS |= {"every_feature": EVERY_FEATURE}
# What the docs say each kind is trained with (stages/train/optim.py).
OPTIMIZER_GROUP = {"matrix": "matrix", "table": "embed", "control": "scalar"}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_parameter_has_exactly_one_role(name):
    with torch.device("meta"):  # full-size presets: no memory
        model = GPT(CONFIGS[name])
    declared = [f"{prefix}.{local}" if prefix else local
                for prefix, module in model.named_modules() if isinstance(module, HasRoles)
                for local in module.roles()]
    assert len(declared) == len(set(declared)), "a parameter declared by two modules"
    assert sorted(declared) == sorted(n for n, _ in model.named_parameters())
    assert role_map(model) == model.roles_by_name() == roles_for(CONFIGS[name])


class _Scaled(nn.Module):
    """A module that declares `scale` but forgets `offset`."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.offset = nn.Parameter(torch.zeros(3))

    def roles(self):
        return {"scale": CONTROL}


def test_a_parameter_without_a_role_is_refused():
    with pytest.raises(RoleError, match=r"parameters without a role: \['offset'\]"):
        role_map(_Scaled())

    class Extended(GPT):  # a new feature that forgets to declare its parameter
        def __init__(self, cfg):
            super().__init__(cfg)
            self.new_mix = nn.Parameter(torch.zeros(4))

    with pytest.raises(RoleError, match="new_mix"):
        Extended(BASE).roles_by_name()

    class Wrapper(nn.Module):  # a plain linear layer nobody declares
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(2, 2)

    with pytest.raises(RoleError, match=r"inner\.weight"):
        role_map(Wrapper())

    class Overdeclared(_Scaled):
        def roles(self):
            return {"scale": CONTROL, "offset": CONTROL, "gone": matrix()}

    with pytest.raises(RoleError, match=r"roles without a parameter: \['gone'\]"):
        role_map(Overdeclared())


def test_baseline_tensors_are_grouped_by_what_they_are():
    groups = {"attn.c_q.weight": "attn_q", "attn.c_k.weight": "attn_k",
              "attn.c_v.weight": "attn_v", "attn.proj.weight": "attn_out",
              "mlp.fc.weight": "mlp_up", "mlp.proj.weight": "mlp_down"}
    roles = roles_for(BASE)
    assert (roles["tok_emb.weight"].kind, roles["tok_emb.weight"].group) == ("table", "embedding")
    for name, role in roles.items():
        suffix = name.split(".", 2)[-1] if name.startswith("blocks.") else None
        if suffix in groups:
            assert (role.kind, role.group) == ("matrix", groups[suffix]), name
        elif name != "tok_emb.weight":
            assert role == CONTROL and role.group == "other", name
    assert set(QUANT_GROUPS) >= {r.group for r in roles.values()}


def test_optimizer_groups_follow_roles():
    model = GPT(EVERY_FEATURE)
    roles = model.roles_by_name()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = split_parameters(model)
    seen = [names[id(p)] for ps in groups.values() for p in ps]
    assert sorted(seen) == sorted(names.values())  # each parameter in exactly one group
    for group, params in groups.items():
        in_order = [names[id(p)] for p in params]
        assert in_order == [n for n, _ in model.named_parameters() if n in set(in_order)]
        for name in in_order:
            assert OPTIMIZER_GROUP[roles[name].kind] == group, name
    assert {"tok_emb.weight", "bigram.embed.weight", "ve.embed.weight"} <= \
        {names[id(p)] for p in groups["embed"]}
    adam, muon = build_optimizers(model, TrainParams())
    assert {id(p) for g in muon.param_groups for p in g["params"]} == \
        {id(p) for p in groups["matrix"]}
    assert [len(g["params"]) for g in adam.param_groups] == [len(groups["embed"]),
                                                             len(groups["scalar"])]


@pytest.fixture(scope="module")
def every_feature_quantized():
    model = randomise(GPT(EVERY_FEATURE), std=0.05)
    ckpt = Artifact("checkpoint", {k: v.clone() for k, v in model.state_dict().items()},
                    EVERY_FEATURE)
    params = QuantizeParams(bits=6, keep_float_max_numel=1024)
    return ckpt, params, quantize(ckpt, params, parents={})


def test_quantized_storage_follows_roles(every_feature_quantized):
    ckpt, params, q = every_feature_quantized
    roles = roles_for(EVERY_FEATURE)
    table = q.extra["tensors"]
    assert set(table) == set(ckpt.tensors)
    for name, entry in table.items():
        role, t = roles[name], ckpt.tensors[name]
        if t.numel() > params.keep_float_max_numel:
            assert entry["scheme"] == "int_per_row", name
            assert entry["group"] == role.group, name  # the stored group is the role's
            assert q.tensors[name + ".q"].dtype == torch.int8
        else:
            expected = "float32" if role.kind == "control" else "float16"
            assert entry["scheme"] == expected, name
            assert q.tensors[name].dtype == getattr(torch, expected), name
    schemes = {e["scheme"] for e in table.values()}
    assert schemes == {"int_per_row", "float16", "float32"}
