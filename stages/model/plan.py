"""The layer plan: which physical layer runs at each virtual position, and how, worked out once.

With depth recurrence the physical layers loop_start..loop_end run `num_loops` extra times with
shared weights, so the virtual layer list is

    [0 .. start-1] + [start .. end] * (num_loops + 1) + [end+1 .. L-1]

(the best record: 0 1 2 | 3 4 5 3 4 5 3 4 5 | 6 7 8 9 10, 17 virtual layers). Its first floor(n/2)
positions are the U-Net encoder and save their outputs; the decoder adds them back in reverse order,
one per position, while any are left (min(#encoder, #decoder) skip slots). Parallel residuals start
at the first position whose layer is >= parallel_start. Without looping (training switches it on
part-way) the list is 0 .. L-1 and uses the first skip slots of the looped layout.

`GPT.hidden` just walks `LayerPlan.steps`; `golf inspect` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stages.model.config import ModelConfig

Mode = Literal["sequential", "gptj", "two_lane"]


@dataclass(frozen=True)
class LayerStep:
    position: int  # virtual position
    layer: int  # the physical layer (block) run here
    mode: Mode  # sequential residual, GPT-J parallel, or two lanes
    saves: bool  # an encoder position: its output is saved for a skip
    skip_from: int | None = None  # a decoder position: add the output saved at this position...
    skip_slot: int | None = None  # ...weighted by skip slot `skip_slot`


@dataclass(frozen=True)
class LayerPlan:
    steps: tuple[LayerStep, ...]
    looping: bool

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(s.layer for s in self.steps)


def virtual_layers(cfg: ModelConfig, looping: bool = True) -> tuple[int, ...]:
    """The physical layer run at each virtual position (see the module docstring)."""
    if not looping or cfg.num_loops == 0:
        return tuple(range(cfg.num_layers))
    start, end = cfg.loop_start, cfg.loop_end
    return (tuple(range(start)) + tuple(range(start, end + 1)) * (cfg.num_loops + 1)
            + tuple(range(end + 1, cfg.num_layers)))


def num_skip_slots(layout: tuple[int, ...]) -> int:
    """U-Net skip connections of a layout: min(#encoder, #decoder), encoder = first half."""
    encoder = len(layout) // 2
    return min(encoder, len(layout) - encoder)


def layer_plan(cfg: ModelConfig, looping: bool) -> LayerPlan:
    """The plan of the looped (when `looping` and num_loops > 0) or plain layout."""
    looping = looping and cfg.num_loops > 0
    layout = virtual_layers(cfg, looping)
    encoder = len(layout) // 2
    first_parallel = next((p for p, layer in enumerate(layout) if layer >= cfg.parallel_start),
                          len(layout))
    steps = []
    for pos, layer in enumerate(layout):
        mode: Mode = "sequential"
        if cfg.parallel_residual != "none" and pos >= first_parallel:
            mode = cfg.parallel_residual
        slot = pos - encoder
        decoder_skip = 0 <= slot < encoder
        steps.append(LayerStep(pos, layer, mode, saves=pos < encoder,
                               skip_from=encoder - 1 - slot if decoder_skip else None,
                               skip_slot=slot if decoder_skip else None))
    return LayerPlan(tuple(steps), looping)


def format_plan(plan: LayerPlan) -> list[str]:
    """One line per virtual position, for `golf inspect`."""
    lines = []
    for s in plan.steps:
        what = "save" if s.saves else ""
        if s.skip_from is not None:
            what = f"+ skip {s.skip_slot} (output of position {s.skip_from})"
        lines.append(f"{s.position:>3}  layer {s.layer:>2}  {s.mode:<10}  {what}".rstrip())
    return lines
