"""Evaluation: `golf eval` (evaluate.py: `evaluate_path(model, data_dir, params)`) and `golf audit`.

params.py    EvalParams, the `eval` section
evaluate.py  load a model (checkpoint, quantized artifact or blob) and score the validation split
scoring.py   windows (chunked, sliding, per document) and exact-once scoring
ttt.py       score-first test-time training: the chunk order that makes it legal, and dispatch
ttt_global.py    its global variant: the whole model trains on each scored chunk
ttt_document.py  its per-document LoRA variant (the best record's), optionally phased
lora.py      per-document LoRA adapters at the best record's sites, one per virtual layer
phased.py    phased TTT: global SGD over documents already scored, between LoRA batches
audit.py     `golf audit`: the legality checks, run through the same scoring pass
provenance.py  the audit's provenance check: tokenizer and training data, by content, vs DATA_DIR
isolation.py the audit's document-isolation check, in the model and in the eval
probes.py    what the audit's checks share: the verdict record, the probed pass, token swaps

Nothing here imports GPTQ or calibration: quantized weights are read back with
stages/quant/format.py. Importing one module never imports the rest of the package.
"""
