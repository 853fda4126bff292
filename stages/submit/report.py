"""The words of a submission: its technique summary and README.md, from its params and results."""

from __future__ import annotations

from stages.ledger import BUDGET_SECONDS

# model.* switches and how the summary names them when they are on.
_FEATURES = {
    "smear_gate": "SmearGate (BOS-masked)", "skip_gates": "gated U-Net skips",
    "ln_scale": "LN scale", "ortho_init": "orthogonal init",
}


def technique_summary(params: dict) -> str:
    """One paragraph: the model, its features, the optimizer, the quantizer, codec and eval."""
    m, t, q = params["model"], params["train"], params["quantize"]
    c, e = params["compress"], params["eval"]
    parts = [f"{m['num_layers']} layers x {m['model_dim']}, {m['num_heads']} heads "
             f"({m['num_kv_heads']} KV), MLP {m['mlp_mult']}x {m['activation']}"]
    parts += [name for key, name in _FEATURES.items() if m[key]]
    if m["attn_gate"] != "none":
        parts.append(f"{m['attn_gate']} attention gate")
    if m["xsa_last_n"]:
        parts.append(f"XSA on the last {m['xsa_last_n']} layers")
    if m["rope_dims"]:
        parts.append(f"partial RoPE ({m['rope_dims']} dims)")
    if m["bigram_buckets"]:
        parts.append(f"BigramHash {m['bigram_buckets']} x {m['bigram_dim']}")
    if m["ve_layers"]:
        parts.append(f"value embeddings on layers {list(m['ve_layers'])}")
    if m["num_loops"]:
        parts.append(f"layers {m['loop_start']}-{m['loop_end']} looped {m['num_loops']} more "
                     f"times")
    if m["parallel_residual"] != "none":
        parts.append(f"{m['parallel_residual']} parallel residuals from layer "
                     f"{m['parallel_start']}")
    optim = f"Muon ({t['muon_ns']} Newton-Schulz) + AdamW, EMA {t['ema_decay']}"
    if t["qat_bits"]:
        optim += f", late QAT int{t['qat_bits']}"
    quant = f"{q['method']} / {q['grid']} int{q['bits']}" + \
        (f" + LQER rank {q['lqer_rank']}" if q["lqer_rank"] else "")
    evaluation = e["mode"] + (f" (LoRA rank {e['ttt_lora_rank']})" if e["mode"] == "ttt" and
                              e["ttt_lora_rank"] else "")
    return (f"{'; '.join(parts)}. {optim}. Quantization {quant}; codec {c['codec']}. "
            f"Eval: {evaluation}.")


def _table(doc: dict) -> list[str]:
    rows = ["| seed | val_loss | val_bpb | model bytes | total bytes | steps | ms/step | eval s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for seed, r in doc["seed_results"].items():
        steps = "-" if r["steps"] is None else f"{r['steps']:,}"
        ms = "-" if r["step_avg_ms"] is None else f"{r['step_avg_ms']:.1f}"
        eval_s = "-" if r["eval_time_s"] is None else f"{r['eval_time_s']:.1f}"
        rows.append(f"| {seed} | {r['val_loss']:.5f} | {r['val_bpb']:.5f} | "
                    f"{r['model_bytes']:,} | {r['artifact_bytes']:,} | {steps} | {ms} | {eval_s} |")
    rows.append(f"| mean ± std | {doc['val_loss']:.5f} ± {doc['val_loss_std']:.5f} | "
                f"{doc['val_bpb']:.5f} ± {doc['val_bpb_std']:.5f} | | | | | |")
    return rows


def readme(doc: dict, params: dict, results: list) -> str:
    """README.md of the submission folder."""
    seeds = ", ".join(str(s) for s in doc["seeds"])
    ledger = [f"- seed {r.seed}: train {r.ledger['train']:.1f} s, eval "
              f"{r.ledger['eval'] or r.metrics.get('eval_seconds', 0):.1f} s of "
              f"{BUDGET_SECONDS:.0f} s each" for r in results]
    compliance = [f"- {key.replace('_', ' ')}: {value}" for key, value in doc["compliance"].items()]
    lines = [
        f"# {doc['name']}", "", doc["blurb"], "",
        f"**val_bpb {doc['val_bpb']:.5f}** (std {doc['val_bpb_std']:.5f}, seeds {seeds}); "
        f"at most {doc['bytes_total']:,} bytes: the model plus train_gpt.py "
        f"({doc['bytes_code']:,} bytes, counted as it ships).", "",
        "## Results", "", *_table(doc), "",
        "## Stack", "", doc["technique_summary"], "",
        "## Time budget", "",
        "Seconds from each run's ledger lines (training, calibration, quantization and "
        "compression count to training; loading and scoring to eval):", "", *ledger, "",
        "## Compliance", "", "From `golf audit` on each seed's model:", "", *compliance, "",
        "## How to run", "",
        "```bash",
        "pip install -r requirements.txt",
        "DATA_PATH=<folder of fineweb_train_*.bin, fineweb_val_*.bin> "
        "TOKENIZER_PATH=<its .model> SEED=<seed> \\",
        "  torchrun --standalone --nproc_per_node=8 train_gpt.py",
        "```", "",
        f"`train_gpt.py` is a self-extracting bundle of the golf {doc['golf_version']} modules "
        f"this run needs, with its params frozen inside; it trains, averages, quantizes, "
        f"compresses, writes `final_model.golf`, reads it back and evaluates it, and logs to "
        f"`logs/`. Its own size is the counted code. It is a Latin-1 source file (PEP 263: "
        f"`# coding: latin-1`): its compressed payload sits in a string literal as raw bytes, so "
        f"read it as bytes or as Latin-1, not as UTF-8.", "",
    ]
    return "\n".join(lines)
