"""`golf compress`: a quantized (or checkpoint) artifact -> one `.golf` blob, and its size report."""

from __future__ import annotations

import hashlib

from stages.artifacts import from_bytes
from stages.budget import BudgetError, size_report
from stages.codec.blob import get_codec, pack
from stages.codec.params import CompressParams


def compress(payload: bytes, source: str, params: CompressParams,
             code_bytes: int) -> tuple[bytes, dict]:
    """Check `payload` is a golf artifact, pack it, and account for its size.

    Args:
        payload: the bytes of a quantized (or checkpoint) artifact file.
        source: its name, for errors.
        params: the `compress` section.
        code_bytes: the counted code: the size of the train_gpt.py that would ship.

    Returns:
        The blob, and the size report (stages.budget.size_report) with the codec, level, layout
        and the payload's kind, size and hash added.

    Raises:
        BudgetError: model + code exceed `compress.limit_bytes`.
    """
    artifact = from_bytes(payload, source, expect=("quantized", "checkpoint"))
    blob = pack(payload, params.codec, params.level, params.layout)
    level = params.level if params.level is not None else get_codec(params.codec).default_level
    report = size_report(len(blob), code_bytes, params.limit_bytes)
    if not report["fits"]:
        raise BudgetError(f"{source}: model {len(blob):,} + code {code_bytes:,} = "
                          f"{report['total_bytes']:,} bytes is over compress.limit_bytes "
                          f"{params.limit_bytes:,}; nothing written")
    report.update(codec=params.codec, layout=params.layout, level=level,
                  payload_bytes=len(payload), payload_kind=artifact.kind,
                  payload_sha256="sha256:" + hashlib.sha256(payload).hexdigest())
    return blob, report
