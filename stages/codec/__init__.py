"""Compression: `golf compress` (compress.py: `compress(payload, source, params)` -> blob, report).

compress.py  the stage: pack, and account for model + counted code against the limit
params.py    CompressParams, the `compress` section
blob.py      the `.golf` blob format, the codec registry, `read_artifact` (artifact or blob)
generic.py   zstd, brotli and lzma, configured once
ans.py       the `ans` codec: each tensor group's codes under its own histogram, with rANS
columns.py   the `ans-columns` codec's contexts: a group's codes split by column or row scale
contexts.py  what a decoder-side context could save on the codes (a bound, `compress --report`)
spans.py     where the codes lie in a payload (typed spans from stages/tensorfile.py)
layouts.py   reversible payload layouts: plain, shuffle, grouped, bitpack
entropy.py   bytes per tensor group against the order-0 entropy (`compress --report`)

Nothing here imports the quantizer: the codecs see a payload and its typed spans only.
"""
