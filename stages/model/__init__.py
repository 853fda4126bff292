"""The model: `stages.model.gpt.build_model(ModelConfig, state)` -> a GPT.

config.py    ModelConfig, the `model` section of params.yaml
gpt.py       GPT, Block, MLP; build_model, roles_for
attention.py causal self-attention (GQA, RoPE, XSA, output gates, value-embedding lambdas)
features.py  BigramHash, value embeddings, SmearGate
plan.py      the layer plan: virtual layers under looping, U-Net skips, parallel lanes
roles.py     what each parameter is (optimizer group, storage, quantization group, TTT target)
qat.py       late QAT's straight-through fake quantiser

Importing a module here never imports the rest of the package (no re-exports), so a DVC stage
depends only on the files it really runs.
"""
