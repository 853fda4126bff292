"""Data: `golf tokenize` (tokenize.py: `tokenize(corpus, params, out_dir)`) and the shard format.

tokenize.py  corpus -> tokenizer + shards + manifest; TokenizeParams, the `tokenize` section
corpus.py    document sources: stdlib-docs (embedded), .jsonl, folders of .txt
shards.py    the official shard format; TrainTokens / ValTokens; the random window sampler
stream.py    the sequential sampler: the train shards in order, each token once per epoch
documents.py provenance by content: the documents of a split, their digest, the val-in-train check
bpb.py       the byte table: bytes per token, and val_bpb

Importing one module never imports the rest of the package (no re-exports).
"""
