"""The general-purpose byte codecs, configured once: zstd, brotli and lzma at a given level.

Used for whole payloads (blob.py) and for the part of a payload the `ans` codec does not entropy-code
(ans.py), so "zstd-22" means the same thing everywhere.
"""

from __future__ import annotations

import lzma

import brotli
import zstandard


def zstd_compress(data: bytes, level: int) -> bytes:
    # Long-distance matching ("long mode") finds repeats beyond the normal window; at artifact
    # sizes it rarely changes the output, and it never hurts. The window stays within the
    # decompressor's default limit (2^27), so any zstd reader can decode the result.
    params = zstandard.ZstdCompressionParameters.from_level(level, enable_ldm=True)
    return zstandard.ZstdCompressor(compression_params=params).compress(data)


def zstd_decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(data)


def brotli_compress(data: bytes, level: int) -> bytes:
    return brotli.compress(data, mode=brotli.MODE_GENERIC, quality=level, lgwin=24)


def brotli_decompress(data: bytes) -> bytes:
    return brotli.decompress(data)


def lzma_compress(data: bytes, level: int) -> bytes:
    return lzma.compress(data, preset=level | lzma.PRESET_EXTREME)


def lzma_decompress(data: bytes) -> bytes:
    return lzma.decompress(data)
