"""Each preset's key hyperparameters against the record it models, value by value, each cited to
the record's log or code (openai/parameter-golf, records/track_10min_16mb/). A preset that drifts
from its record fails here with the key named.

Shorthands: BEST = 2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611 (train_seed42.log);
QK5 = 2026-04-06_SP8192_QK5_LegalTTT_1.0828 (train_seed42.log; line numbers of its train_gpt.py are
of the decoded source); P401 = 2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233
(train_gpt.py, train_seed1337.log); R1271 = 2026-03-20_11L_XSA4_EMA_Int6_MLP3x_WD04_1.1271
(train_gpt.py and the env of its README); R10L = 2026-03-20_10L_Int5MLP_MuonWD04_SWA50;
BASE = 2026-03-17_NaiveBaseline.
"""

import pytest

from golfcli.commands.params import CLASSES
from golfcli.params import load_params
from stages.model.gpt import count_parameters
from tests.conftest import ROOT

RECORDS = {
    "best": {
        "model.num_layers": 11,              # BEST log: num_layers: 11
        "model.qk_gain_init": 5.0,           # BEST log: qk_gain_init: 5.0
        "model.rope_dims": 16,               # BEST log: rope_dims: 16
        "model.xsa_last_n": 11,              # BEST log: xsa_last_n: 11
        "model.loop_start": 3,               # BEST log: loop_start: 3
        "model.loop_end": 5,                 # BEST log: loop_end: 5
        "model.num_loops": 2,                # BEST log: num_loops: 2
        "model.parallel_residual": "two_lane",  # BEST:1291-1315 _parallel_block
        "model.parallel_start": 8,           # BEST log: parallel_start_layer: 8
        "model.ortho_init": True,            # BEST:1254-1278 _init_weights
        "model.smear_gate_style": "lambda",  # BEST:1331-1337 (BOS-masked, before the norm)
        # BEST log: 600.0 - gptq_reserve_seconds 0.5, Hessians after it; its compliant re-run
        # (2026-04-29_SmearGateBOSFix_3Seed_1.06141 README:38-49) reserves 8 s: 592
        "train.max_wallclock_seconds": 592,
        "train.matrix_lr": 0.026,            # BEST log: matrix_lr: 0.026
        "train.embed_lr": 0.03,              # BEST log: tied_embed_lr: 0.03
        "train.scalar_lr": 0.02,             # BEST log: scalar_lr: 0.02
        "train.adam_beta2": 0.99,            # BEST log: beta2: 0.99
        "train.muon_momentum": 0.97,         # BEST log: muon_momentum: 0.97
        "train.muon_wd": 0.095,              # BEST log: muon_wd: 0.095
        "train.embed_wd": 0.085,             # BEST log: embed_wd: 0.085
        "train.scalar_wd": 0.02,             # BEST log: adam_wd: 0.02
        "train.ema_decay": 0.9965,           # BEST log: ema_decay: 0.9965
        "train.warmdown_frac": 0.85,         # BEST log: warmdown_frac: 0.85
        "train.min_lr_frac": 0.1,            # BEST log: min_lr: 0.1
        "train.loop_enable_at": 0.35,        # BEST log: enable_looping_at: 0.35
        "quantize.group_bits": {"embedding": 7},  # BEST log: embed_bits: 7, matrix_bits: 6
        "quantize.calib_batches": 16,        # BEST log: gptq_calibration_batches: 16
        "quantize.calib_batch_seqs": 48,     # BEST:725-727: 786,432 tokens / 8 ranks / 2048
        "quantize.calib_seq_len": 2048,      # BEST log: train_seq_len: 2048
    },
    "pr1423": {
        "model.qk_gain_init": 5.0,           # QK5 log: qk_gain_init: 5.0
        "model.loop_start": 4,               # QK5 log: loop_start: 4
        "model.loop_end": 5,                 # QK5 log: loop_end: 5
        "model.num_loops": 2,                # QK5 log: num_loops: 2
        "model.ortho_init": True,            # QK5:136-137 _init_weights
        "train.max_wallclock_seconds": 588,  # QK5 log: 600.0 - gptq_reserve_seconds: 12.0
        "train.matrix_lr": 0.02,             # QK5 log: matrix_lr: 0.02
        "train.embed_lr": 0.03,              # QK5 log: tied_embed_lr: 0.03
        "train.scalar_lr": 0.02,             # QK5 log: scalar_lr: 0.02
        "train.muon_wd": 0.085,              # QK5 log: muon_wd: 0.085
        "train.embed_wd": 0.085,             # QK5 log: embed_wd: 0.085
        "train.scalar_wd": 0.02,             # QK5 log: adam_wd: 0.02
        "train.muon_momentum": 0.99,         # QK5 log: muon_momentum: 0.99
        "train.ema_decay": 0.997,            # QK5 log: ema_decay: 0.997
        "train.warmdown_frac": 0.667,        # QK5 log: warmdown_frac: 0.667
        "train.loop_enable_at": 0.5,         # QK5 log: enable_looping_at: 0.5
        "quantize.group_bits": {"embedding": 8},  # QK5 log: embed_bits: 8
        "quantize.group_clip_sigmas": {"embedding": 20.0},  # QK5 log: embed_clip_sigmas: 20.0
        "quantize.calib_batches": 64,        # QK5 log: gptq_calibration_batches: 64
        "quantize.calib_batch_seqs": 48,     # QK5:240 next_batch(train_batch_tokens, 1) per rank
        "eval.ttt_lr": 0.005,                # QK5 log: ttt_lr: 0.005
        "eval.ttt_epochs": 3,                # QK5 log: ttt_epochs: 3
        "eval.ttt_chunk_tokens": 32768,      # QK5 log: ttt_chunk_tokens: 32768
    },
    "pr401": {
        "model.xsa_last_n": 4,               # P401:79 XSA_LAST_N 4
        "model.rope_dims": 16,               # P401:80 ROPE_DIMS 16
        "model.rope_ntk_train_len": 1024,    # P401:688 Rotary(..., train_seq_len=1024)
        "model.bigram_buckets": 2048,        # P401:77 BIGRAM_VOCAB_SIZE 2048
        "model.ve_layers": (9, 10),          # P401:86 VE_LAYERS "9,10"
        "model.smear_gate_style": "blend",   # P401:532-538 SmearGate, after the norm (740)
        "model.ortho_init": True,            # P401:713-725 _init_weights
        "train.matrix_lr": 0.025,            # P401:58 MATRIX_LR 0.025
        "train.embed_lr": 0.035,             # P401:56 TIED_EMBED_LR 0.035
        "train.scalar_lr": 0.025,            # P401:59 SCALAR_LR 0.025
        "train.muon_wd": 0.04,               # P401:74 MUON_WD 0.04
        "train.embed_wd": 0.04,              # P401:75 ADAM_WD 0.04
        "train.scalar_wd": 0.04,             # P401:75 ADAM_WD 0.04
        "train.ema_decay": 0.997,            # P401:1186 ema_decay = 0.997
        "train.swa_every": 50,               # P401:73 SWA_EVERY 50
        "train.swa_lr_scale": 0.2,           # P401:1257 scale < 0.2
        "train.qat_bits": 0,                 # P401:1058 compile, 1226 flag flipped after it: dead
        "quantize.group_bits": {"embedding": 8, "other": 8},  # P401:1314 int6 only mlp, attn
    },
    "pr398": {
        "model.xsa_last_n": 4,               # R1271 README: XSA_LAST_N=4
        "model.bigram_buckets": 2048,        # R1271 README: BIGRAM_VOCAB_SIZE=2048
        "model.rope_ntk_train_len": 1024,    # R1271:622 Rotary(..., train_seq_len=1024)
        "model.smear_gate_style": "blend",   # R1271:653 SmearGate (per-channel blend)
        "model.ortho_init": True,            # R1271:793-805 _init_weights
        "train.matrix_lr": 0.025,            # R1271 README: MATRIX_LR=0.025
        "train.embed_lr": 0.035,             # R1271 README: TIED_EMBED_LR=0.035
        "train.muon_wd": 0.04,               # R1271 README: MUON_WD=0.04
        "train.embed_wd": 0.04,              # R1271 README: ADAM_WD=0.04
        "train.ema_decay": 0.997,            # R1271 README: EMA_DECAY=0.997
        "quantize.group_bits": {"embedding": 8, "other": 8},  # R1271:1460 int6 only mlp, attn
    },
    "pr455": {  # no record of its own: what both neighbours' code (R1271, P401) does alike
        "model.smear_gate_style": "blend",   # R1271:653, P401:532-538
        "model.rope_ntk_train_len": 1024,    # R1271:622, P401:501
        "model.ortho_init": True,            # R1271:793-805, P401:713-725
        "model.ve_layers": (9, 10),          # P401:86 VE_LAYERS "9,10"
        "quantize.group_bits": {"embedding": 8, "other": 8},  # R1271:1460, P401:1314
    },
    "pr264": {
        "model.bigram_buckets": 10240,       # R10L:89 BIGRAM_VOCAB_SIZE 10240
        "model.smear_gate_style": "blend",   # R10L:575 SmearGate (per-channel blend)
        "model.ortho_init": True,            # R10L:676-688 _init_weights
        "model.rope_ntk_train_len": 0,       # R10L:541 Rotary(head_dim, base): no NTK
        "train.matrix_lr": 0.02,             # R10L:74 MATRIX_LR 0.02
        "train.embed_lr": 0.03,              # R10L:72 TIED_EMBED_LR 0.03
        "train.muon_wd": 0.04,               # R10L:84 WEIGHT_DECAY 0.04 (Muon, :961)
        "train.embed_wd": 0.04,              # R10L:953 weight_decay=args.weight_decay
        "train.scalar_wd": 0.04,             # R10L:969 weight_decay=args.weight_decay
        "train.swa_lr_scale": 0.4,           # R10L:93 SWA_START_FRAC 0.4
        # R10L:366 int5 MLP, int6 the rest; tok_emb fp16 there (:285), int8 here (see header)
        "quantize.group_bits": {"mlp_up": 5, "mlp_down": 5, "embedding": 8},
    },
    "baseline": {
        "model.num_layers": 9,               # BASE log: model_params 17,059,912 at 9 x 512
        "model.ortho_init": False,           # BASE:693-698 _init_weights: zero-init outputs only
        "train.matrix_lr": 0.04,             # BASE log: matrix_lr:0.04
        "train.embed_lr": 0.05,              # BASE log: embed_lr:0.05
        "train.scalar_lr": 0.04,             # BASE log: scalar_lr:0.04
        "train.muon_momentum": 0.95,         # BASE:80 MUON_MOMENTUM 0.95
        "train.batch_tokens": 524288,        # BASE log: train_batch_tokens:524288
        "train.seq_len": 1024,               # BASE log: train_seq_len:1024
    },
}

# model_params of each record's log, where the preset models that record's model exactly.
LOGGED_PARAMETERS = {
    "best": 35_945_671,      # BEST log: model_params:35945671
    "pr1423": 35_943_512,    # QK5 log: model_params:35943512
    "pr401": 26_993_756,     # P401 train_seed1337.log: model_params:26993756
    "pr398": 26_829_913,     # R1271 train_seed1337.log: model_params:26829913
    "baseline": 17_059_912,  # BASE train log: model_params:17059912
}


def _preset(name):
    return load_params(ROOT / "configs" / f"{name}.yaml", CLASSES)


def _value(params, dotted):
    section, key = dotted.split(".")
    return getattr(params[section], key)


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_preset_hyperparameters_are_the_records(name):
    params = _preset(name)
    wrong = {key: (_value(params, key), want) for key, want in RECORDS[name].items()
             if _value(params, key) != want}
    assert not wrong, f"{name}: (preset, record) {wrong}"


@pytest.mark.parametrize("name", sorted(LOGGED_PARAMETERS))
def test_preset_parameter_count_is_the_records_logged_count(name):
    assert count_parameters(_preset(name)["model"]) == LOGGED_PARAMETERS[name]
