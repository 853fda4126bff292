"""`QuantizeParams`: the `quantize` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from stages.model.roles import QuantGroup
from stages.params import Device, Range, check, param, validate

Bits = Annotated[int, Range(2, 8)]
Positive = Annotated[int, Range(1)]
Method = Literal["rtn", "gptq"]  # quant/registry.py METHODS
Grid = Literal["percentile", "mse", "sdclip", "sdclip-hessian"]  # quant/registry.py GRIDS


@dataclass(frozen=True)
class QuantizeParams:
    """`golf quantize`: which solver (`method`) and clip rule (`grid`), and the storage policy.

    Bits and SDClip multipliers can differ per tensor group (`group_bits`, `group_clip_sigmas`,
    keyed by the quantization groups of stages/model/roles.py); groups not named use `bits` and
    `clip_sigmas`.
    """

    SECTION: ClassVar[str] = "quantize"

    method: Method = param("rtn", "how codes are rounded: rtn (nearest) or gptq (error feedback "
                                  "through the calibration Hessian)")
    grid: Grid = param("percentile", "how each row's clip is chosen: a |w| percentile, the best of "
                                     "mse_percentiles, SDClip (k std), or SDClip widened by "
                                     "Hessian importance")
    bits: Bits = param(8, "bits of the quantized tensors")
    group_bits: dict[QuantGroup, Bits] = param({}, "bits per tensor group, overriding bits")
    clip_percentile: Annotated[float, Range(0, 100, lo_open=True)] = param(
        99.99984, "percentile grid: the per-row clip quantile of |w|, in percent")
    mse_percentiles: list[Annotated[float, Range(0, 100, lo_open=True)]] = param(
        [99.9, 99.95, 99.99, 99.999, 100.0],
        "mse grid: per matrix, the percentile among these with the least rounding error")
    clip_sigmas: Annotated[float, Range(0, lo_open=True)] = param(
        12.85, "sdclip grids: clip = k * std(row)")
    group_clip_sigmas: dict[QuantGroup, Annotated[float, Range(0, lo_open=True)]] = param(
        {}, "sdclip k per tensor group, overriding clip_sigmas")
    hessian_lambda: float = param(0.175, "sdclip-hessian: weight of the Hessian-importance term")
    clip_multiplier: Annotated[float, Range(0, lo_open=True)] = param(
        1.0, "scales every clip; --target-bytes searches it")
    keep_float_max_numel: Annotated[int, Range(0)] = param(
        65536, "tensors of at most this many values stay in float (fp16, fp32 for controls)")
    prune_frac: Annotated[float, Range(0, 1, hi_open=True)] = param(
        0.0, "zero this fraction of the smallest |w| of each quantized matrix first")
    lqer_rank: Annotated[int, Range(0)] = param(
        0, "LQER: rank of the stored correction of the worst matrices' error; 0 = off")
    lqer_top: Positive = param(3, "LQER: how many matrices (largest error first) get one")
    lqer_group: Positive = param(64, "LQER: values per int4 scale of the B factor")
    gptq_block: Positive = param(128, "GPTQ: columns per block of lazy error propagation")
    gptq_damp: Annotated[float, Range(0, lo_open=True)] = param(
        0.01, "GPTQ: diagonal damping, times the mean Hessian diagonal")
    gptq_act_order: bool = param(True, "GPTQ: quantize columns in decreasing Hessian diagonal")
    gptq_rate_lambda: Annotated[float, Range(0)] = param(
        0.0, "GPTQ: rate-aware rounding, the weight of a code's bits against its squared error "
        "(in steps); 0 = round to nearest")
    fisher_alpha: Annotated[float, Range(0, 1)] = param(
        0.0, "row steps toward equal loss per bit by each row's Fisher on the calibration tokens "
        "(stages/quant/allocate.py): 0 = the grid's steps, 1 = the full rule; its rows differ in "
        "width, which compress.codec ans-columns codes (plain ans does not)")
    calib_batches: Positive = param(16, "calibration batches")
    calib_batch_seqs: Positive = param(8, "sequences per calibration batch")
    calib_seq_len: Positive = param(256, "tokens per calibration sequence")
    calib_seed: int = param(0, "seed of the calibration windows or the self-generated text")
    calib_temperature: Annotated[float, Range(0, lo_open=True)] = param(
        0.8, "sampling temperature of self-generated calibration text (--calib self)")
    device: Device = param("auto", "where calibration and GPTQ run: auto = CUDA when present")

    def __post_init__(self) -> None:
        validate(self)
        check(bool(self.mse_percentiles), "quantize.mse_percentiles must not be empty")

    def bits_for(self, group: str) -> int:
        return self.group_bits.get(group, self.bits)

    def clip_sigmas_for(self, group: str) -> float:
        return self.group_clip_sigmas.get(group, self.clip_sigmas)

    def needs_calibration(self) -> bool:
        """Whether the method, the grid or the step allocation needs calibration (--calib)."""
        return self.method == "gptq" or self.grid == "sdclip-hessian" or self.fisher_alpha > 0
