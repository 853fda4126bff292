"""Per-document LoRA adapters for TTT, at the sites the best record adapts, one per virtual layer.

Sites (what each adapter reads -> where its output is added):
- q, k, v: the attention's normed input n -> the c_q / c_k / c_v outputs;
- o: n -> the attention output (after its projection, before attn_scale);
- mlp: the MLP's normed input -> the MLP output (before mlp_scale), a path beside the whole MLP;
- head: the final norm's output -> the logits (before the softcap).

Under depth recurrence a physical layer runs at several virtual positions; each position gets its
own adapters, as the record has one per slot. A block's modules are called once per position, in
plan order, so the k-th call of layer L's module is at the k-th position running L.

Documents are batched: every adapter holds one (A, B) pair per lane, A (lanes, r, in),
B (lanes, out, r), and row i of a forward pass uses lane `rows[i]`. A lane's output depends only
on its own A and B, so a document's scores and gradients do not depend on its batch mates.
A ~ U(+-1/sqrt(in)), B = 0, output scaled by alpha / r. The model code is untouched: the block
sites are forward hooks, the head is applied here (the tied head is not a module).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SITES: tuple[str, ...] = ("q", "k", "v", "o", "mlp", "head")
_MODULE = {"q": "attn.c_q", "k": "attn.c_k", "v": "attn.c_v", "o": "attn", "mlp": "mlp"}


class LaneLoRA(nn.Module):
    """x (rows, T, in) -> (rows, T, out): x A[lane]^T B[lane]^T alpha / r for each row's lane."""

    def __init__(self, lanes: int, in_features: int, out_features: int, rank: int, alpha: float,
                 gen: torch.Generator, device: torch.device):
        super().__init__()
        self.scale = alpha / rank
        bound = 1 / math.sqrt(in_features)
        a = (torch.rand(lanes, rank, in_features, generator=gen) * 2 - 1) * bound
        self.A = nn.Parameter(a.to(device))
        self.B = nn.Parameter(torch.zeros(lanes, out_features, rank, device=device))

    def forward(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        a = self.A[rows].to(x.dtype).transpose(1, 2)  # (rows, in, r)
        b = self.B[rows].to(x.dtype).transpose(1, 2)  # (rows, r, out)
        return (x @ a) @ b * self.scale


class DocumentAdapters(nn.Module):
    """Adapters at `sites` for `lanes` documents at a time, hooked into `net` (a GPT)."""

    def __init__(self, net: nn.Module, sites: Sequence[str], rank: int, alpha: float,
                 lanes: int, seed: int = 0):
        super().__init__()
        cfg, device = net.config, net.tok_emb.weight.device
        self.__dict__["net"] = net  # not a submodule: its weights are not the adapters'
        self.lanes = lanes
        self.layout = [s.layer for s in net.plan.steps]  # virtual position -> physical layer
        gen = torch.Generator().manual_seed(seed)
        d, kv = cfg.model_dim, cfg.num_kv_heads * cfg.head_dim
        out = {"q": d, "k": kv, "v": kv, "o": d, "mlp": d}
        self.slots = nn.ModuleDict({
            site: nn.ModuleList(LaneLoRA(lanes, d, out[site], rank, alpha, gen, device)
                                for _ in self.layout)
            for site in sites if site != "head"})
        self.head = LaneLoRA(lanes, d, cfg.vocab_size, rank, alpha, gen, device) \
            if "head" in sites else None
        self.rows: torch.Tensor | None = None
        self._calls: dict[tuple[str, int], int] = {}
        self._handles: list = []

    def attach(self) -> DocumentAdapters:
        """Hook the block sites into the net (one set of adapters at a time)."""
        self.remove()
        self._handles = [self.net.blocks[layer].get_submodule(_MODULE[site])
                         .register_forward_hook(self._hook(site, layer))
                         for site in self.slots for layer in sorted(set(self.layout))]
        return self

    def _position(self, site: str, layer: int) -> int:
        """The virtual position of this call of `layer`'s `site` module (its k-th this pass)."""
        k = self._calls.get((site, layer), 0)
        self._calls[(site, layer)] = k + 1
        return [p for p, lay in enumerate(self.layout) if lay == layer][k]

    def _hook(self, site: str, layer: int):
        def add_delta(module, inputs, output):
            if self.rows is None:
                raise RuntimeError("adapted modules run only inside DocumentAdapters.logits")
            n = inputs[0]  # the normed input the site reads
            return output + self.slots[site][self._position(site, layer)](n, self.rows)
        return add_delta

    def logits(self, idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """fp32 logits (B, T, V) of the adapted model; row i of `idx` (B, T) uses lane rows[i]."""
        net = self.net
        if [s.layer for s in net.plan.steps] != self.layout:
            raise RuntimeError("the layer plan changed since the adapters were made")
        if self.slots and not self._handles:
            raise RuntimeError("the adapters are not attached")
        self.rows, self._calls = rows, {}
        try:
            h = net.final_norm(net.hidden(idx))  # (B, T, d)
        finally:
            self.rows = None
        z = F.linear(h, net.tok_emb.weight.to(h.dtype)).float()
        if self.head is not None:
            z = z + self.head(h, rows).float()
        cap = net.config.logit_softcap
        return cap * torch.tanh(z / cap)

    def reset(self) -> None:
        """B = 0 in every lane (the adapters add nothing again); A is kept (warm start)."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, LaneLoRA):
                    m.B.zero_()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
