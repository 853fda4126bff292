"""`CompressParams`: the `compress` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from stages.budget import LIMIT_BYTES
from stages.params import Range, param, validate


@dataclass(frozen=True)
class CompressParams:
    """The `compress` section: codec, its level, and the layout of the payload before the codec."""

    SECTION: ClassVar[str] = "compress"

    codec: Literal["zstd", "brotli", "lzma", "ans", "ans-columns"] = param(
        "zstd", "zstd, brotli, lzma, ans (each tensor group's codes entropy-coded with rANS "
                "under the group's histogram, the rest with zstd/brotli), or ans-columns (ans, "
                "with a group's codes split by column or row scale where that codes smaller)")
    level: Annotated[int, Range(0)] | None = param(
        None, "codec level; null = the codec's strongest (zstd 22, brotli 11, lzma 9)")
    layout: Literal["plain", "shuffle", "grouped", "bitpack"] = param(
        "plain", "payload rearrangement before the codec: bytes by parity (shuffle), codes of one "
                 "group together and transposed (grouped), int-N codes in N bits (bitpack); ans "
                 "needs plain")
    limit_bytes: Annotated[int, Range(1)] = param(
        LIMIT_BYTES, "the size limit reported against: model + counted code, decimal bytes")

    def __post_init__(self) -> None:
        validate(self)
