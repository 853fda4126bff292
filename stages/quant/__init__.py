"""Quantization: `golf quantize` (quantize.py: `quantize(checkpoint, params, ...)`).

params.py     QuantizeParams, the `quantize` section
quantize.py   the stage: storage policy by role, method x grid, LQER, fitting a byte target
registry.py   the GRIDS and METHODS registries
grid.py       clip rules: percentile, mse, sdclip, sdclip-hessian
rtn.py        round to nearest
gptq.py       GPTQ
rate.py       rate-aware rounding: floor or ceil by error plus bits (GPTQ's option)
lqer.py       low-rank repair of the quantization error
calibrate.py  calibration tokens (train shards or self-generated) and Hessians
format.py     the quantized layout and `dequantize`: imports no solver, so eval depends on none

Importing one module never imports the rest of the package (no re-exports).
"""
