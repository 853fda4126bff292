"""What each parameter of the model is, declared once by the module that owns it.

A `Role` says everything later stages need to know about a tensor, so none of them matches names:

- `kind`: `matrix` (trained by Muon; stored fp16 when small, else quantized), `table` (a lookup
  table: trained by AdamW at the embedding LR; fp16 when small, else quantized) or `control`
  (a scale, gate, mix or lambda: AdamW at the scalar LR; fp32 when kept in float);
- `group`: the quantization group, whose tensors share bits, clip rule and codec histogram
  (`quantize.group_bits`, `compress --report`).

Every module with parameters implements `roles()` for its own parameters and those of its plain
children (an `nn.Linear` or `nn.Embedding` does not know what it is used for); `role_map` collects
them under the canonical names and refuses a parameter without a role, so a new feature cannot
silently land in the wrong optimizer or precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from torch import nn

from stages.errors import GolfError

Kind = Literal["matrix", "table", "control"]
QuantGroup = Literal["embedding", "attn_q", "attn_k", "attn_v", "attn_out", "mlp_up", "mlp_down",
                     "other"]
# Canonical order: how reports and the codecs list the groups.
QUANT_GROUPS: tuple[str, ...] = QuantGroup.__args__


class RoleError(GolfError):
    """A model whose parameters and declared roles do not match one to one."""


@dataclass(frozen=True)
class Role:
    kind: Kind
    group: QuantGroup = "other"


CONTROL = Role("control")


def matrix(group: QuantGroup = "other") -> Role:
    return Role("matrix", group)


def table(group: QuantGroup = "other") -> Role:
    return Role("table", group)


@runtime_checkable
class HasRoles(Protocol):
    def roles(self) -> dict[str, Role]:
        """Role of each parameter this module owns, by its name relative to the module."""


def role_map(model: nn.Module) -> dict[str, Role]:
    """The role of every parameter of `model`, by canonical name (its state_dict name)."""
    roles: dict[str, Role] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, HasRoles):
            for local, role in module.roles().items():
                roles[f"{prefix}.{local}" if prefix else local] = role
    names = {name for name, _ in model.named_parameters()}
    missing, unknown = sorted(names - roles.keys()), sorted(roles.keys() - names)
    if missing or unknown:
        raise RoleError(f"parameters without a role: {missing}; roles without a parameter: "
                        f"{unknown}")
    return roles
