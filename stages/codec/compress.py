"""`golf compress`: a quantized (or checkpoint) artifact -> one `.golf` blob, and its size report."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from stages.artifacts import from_bytes
from stages.budget import LIMIT_BYTES, size_report
from stages.codec.blob import get_codec, pack
from stages.params import Range, param, validate


@dataclass(frozen=True)
class CompressParams:
    """The `compress` section: codec, its level, and the layout of the payload before the codec."""

    SECTION: ClassVar[str] = "compress"

    codec: Literal["zstd", "brotli", "lzma", "ans"] = param(
        "zstd", "zstd, brotli, lzma, or ans (each tensor group's codes entropy-coded with rANS "
                "under the group's histogram, the rest with zstd/brotli)")
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


def compress(payload: bytes, source: str, params: CompressParams) -> tuple[bytes, dict]:
    """Check `payload` is a golf artifact, pack it, and account for its size.

    Args:
        payload: the bytes of a quantized (or checkpoint) artifact file.
        source: its name, for errors.
        params: the `compress` section.

    Returns:
        The blob, and the size report (stages.budget.size_report) with the codec, level, layout
        and the payload's kind, size and hash added.
    """
    artifact = from_bytes(payload, source, expect=("quantized", "checkpoint"))
    blob = pack(payload, params.codec, params.level, params.layout)
    level = params.level if params.level is not None else get_codec(params.codec).default_level
    report = size_report(len(blob), params.limit_bytes)
    report.update(codec=params.codec, layout=params.layout, level=level,
                  payload_bytes=len(payload), payload_kind=artifact.kind,
                  payload_sha256="sha256:" + hashlib.sha256(payload).hexdigest())
    return blob, report
