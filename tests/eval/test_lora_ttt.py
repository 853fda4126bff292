"""Per-document LoRA TTT as the best record computes it: 48-target chunks from the start of every
document, n - 1 updates for n chunks, adapters at every record site and virtual slot, per-document
math independent of the batch, and phased global SGD only on documents already scored."""

import numpy as np
import pytest
import torch

from stages.data.shards import BOS_ID
from stages.eval import ttt
from stages.eval.audit import check_score_before_update
from stages.eval.evaluate import score_stream
from stages.eval.lora import SITES, DocumentAdapters
from stages.eval.params import EvalParams
from stages.eval.phased import ScoredDocuments, global_sgd
from stages.eval.scoring import Scores, document_chunk_windows, segments
from stages.model.config import ModelConfig
from stages.model.gpt import build_model
from tests.conftest import EVERY_FEATURE, TINY_MODEL, randomise

LORA = dict(mode="ttt", seq_len=512, ttt_chunk_tokens=48, ttt_lora_rank=4, ttt_lora_alpha=8.0,
            ttt_optimizer="adamw", ttt_momentum=0.0, ttt_lr=1e-3, ttt_epochs=1,
            ttt_lora_batch_docs=2)


def stream_of(targets: list[int], seed: int = 0, vocab: int = 64) -> torch.Tensor:
    """Documents with these target counts: each is its BOS and tokens up to the next BOS (the last
    one to the end of the stream), so document d has exactly targets[d] targets."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, n in enumerate(targets):
        body = n if i == len(targets) - 1 else n - 1  # the next BOS is this document's last target
        parts += [[BOS_ID], rng.integers(2, vocab, size=body)]
    return torch.from_numpy(np.concatenate(parts).astype(np.int64))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**TINY_MODEL, "vocab_size": 64, "model_dim": 32}))


def doc_of_chunk(scores: Scores, stream: torch.Tensor) -> dict:
    docs = segments(stream.numpy(), True)
    starts = [off for off, _ in docs]
    return {e[1]: int(np.searchsorted(starts, e[2][0][0], side="right")) - 1
            for e in scores.events if e[0] == "score"}


def test_every_document_is_chunked_from_its_start_and_updated_once_per_chunk_but_its_last(net):
    targets = [1, 47, 48, 300, 5000]
    stream = stream_of(targets)
    assert [n for _, n in segments(stream.numpy(), True)] == targets
    scores = Scores.empty(stream.numel() - 1)
    ttt.run_ttt(net, stream, EvalParams(**LORA), scores)
    assert (scores.counts == 1).all()  # every target scored exactly once
    check = check_score_before_update(scores)  # each chunk scored before any update uses it
    assert check.passed, check.detail
    doc = doc_of_chunk(scores, stream)
    chunks = [sum(1 for d in doc.values() if d == i) for i in range(len(targets))]
    updates = [sum(1 for e in scores.events if e[0] == "update" and doc[e[1]] == i)
               for i in range(len(targets))]
    assert chunks == [-(-n // 48) for n in targets] == [1, 1, 1, 7, 105]
    assert updates == [c - 1 for c in chunks] == [0, 0, 0, 6, 104]
    # the first chunk of every document scores its first 48 targets (or fewer), not 512
    firsts = {}
    for e in scores.events:
        if e[0] == "score" and doc[e[1]] not in firsts:
            firsts[doc[e[1]]] = e[2][0][1] - e[2][0][0]
    assert [firsts[i] for i in range(len(targets))] == [1, 47, 48, 48, 48]


def test_chunk_windows_end_at_the_chunk_with_up_to_seq_len_context():
    windows = document_chunk_windows(100, 5000, 2048, 48)
    assert len(windows) == 105
    assert windows[0].scored == (100, 148) and windows[0].start == 100
    w = windows[50]  # targets [2400, 2448), context [400, 2448)
    assert w.scored == (2500, 2548) and w.start == 100 + 2448 - 2048 and w.length == 2048
    assert windows[-1].scored == (100 + 4992, 5100) and windows[-1].length == 2048


def test_adapters_sit_at_every_record_site_once_per_virtual_slot():
    torch.manual_seed(0)
    net = randomise(build_model(EVERY_FEATURE))  # zero-init outputs would hide q, k, v
    positions = len(net.plan.steps)
    assert positions == 6  # layout 0 1 2 1 2 3
    idx = torch.randint(0, EVERY_FEATURE.vocab_size, (2, 24))
    with torch.no_grad():
        plain = net(idx)
    ad = DocumentAdapters(net, SITES, rank=2, alpha=4.0, lanes=2).attach()
    assert set(ad.slots) == {"q", "k", "v", "o", "mlp"} and ad.head is not None
    assert all(len(ad.slots[s]) == positions for s in ad.slots)
    rows = torch.tensor([0, 1])
    with torch.no_grad():
        base = ad.logits(idx, rows)
        torch.testing.assert_close(base, plain, rtol=0, atol=0)  # B = 0 adds exactly nothing
        for site in [*ad.slots, "head"]:
            for p in range(positions if site != "head" else 1):
                lora = ad.head if site == "head" else ad.slots[site][p]
                lora.B[1].normal_()  # lane 1 only
                out = ad.logits(idx, rows)
                assert not torch.equal(out[1], base[1]), (site, p)  # this slot is reached
                assert torch.equal(out[0], base[0]), (site, p)  # and only by its own lane
                lora.B.zero_()
    ad.remove()
    assert not any(m._forward_hooks for m in net.modules())


def test_a_documents_scores_do_not_depend_on_its_batch_mates(net):
    x, y, z = stream_of([200], seed=1), stream_of([90], seed=2), stream_of([130], seed=3)
    runs = []
    for mate in (y, z):
        stream = torch.cat([x, mate])
        scores = Scores.empty(stream.numel() - 1)
        ttt.run_ttt(net, stream, EvalParams(**{**LORA, "ttt_lr": 1e-2}), scores)
        runs.append(scores.nll[:200])
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-6, atol=1e-7)
    frozen = Scores.empty(x.numel() + y.numel() - 1)
    ttt.run_ttt(net, torch.cat([x, y]), EvalParams(**{**LORA, "ttt_lr": 0.0}), frozen)
    assert not np.allclose(runs[0], frozen.nll[:200])  # the adapters did change later chunks


def test_lora_ttt_at_zero_lr_scores_exactly_as_the_plain_eval(tiny_final, data_dir):
    from stages.data.shards import load_val_tokens

    stream = load_val_tokens(data_dir).concatenated().astype(np.int64)
    starts = np.flatnonzero(stream == BOS_ID)[:6]
    docs = torch.from_numpy(np.concatenate([stream[s:s + 120] for s in starts]))
    params = dict(seq_len=128, batch_seqs=8, doc_isolated=True)
    plain = score_stream(tiny_final, docs, EvalParams(mode="chunked", **params))
    lora = EvalParams(**{**LORA, **params, "ttt_lr": 0.0, "ttt_phased_prefix_docs": 4,
                         "ttt_phased_lr": 0.0, "ttt_phased_chunk_tokens": 128})
    frozen = score_stream(tiny_final, docs, lora)
    assert any(e[0] == "update" and isinstance(e[1], str) for e in frozen.events)  # phases ran
    np.testing.assert_allclose(frozen.nll, plain.nll, rtol=1e-6, atol=1e-6)
    assert frozen.nll.mean() == pytest.approx(plain.nll.mean(), rel=1e-7)


def test_lora_ttt_lowers_the_loss_on_a_repeated_document(net):
    rng = np.random.default_rng(5)
    motif = rng.integers(2, 64, size=48)
    stream = torch.from_numpy(np.concatenate([[BOS_ID], np.tile(motif, 10)]).astype(np.int64))
    losses = {}
    for lr in (0.0, 1e-2):
        scores = Scores.empty(stream.numel() - 1)
        ttt.run_ttt(net, stream, EvalParams(**{**LORA, "ttt_lr": lr}), scores)
        losses[lr] = scores.nll[240:].mean()  # the second half of the document
    assert losses[1e-2] < losses[0.0] - 0.1, losses


def test_phased_ttt_trains_only_on_documents_already_scored(net):
    targets = [60, 300, 120, 200, 90, 150]
    stream = stream_of(targets, seed=7)
    params = EvalParams(**{**LORA, "ttt_phased_prefix_docs": 4, "ttt_phased_phases": 2,
                           "ttt_phased_chunk_tokens": 128, "seq_len": 64})
    scores = Scores.empty(stream.numel() - 1)
    ttt.run_ttt(build_model(net.config, net.state_dict()), stream, params, scores)
    scored = np.zeros(len(scores.counts), dtype=bool)
    phase_updates = 0
    for e in scores.events:
        if e[0] == "score":
            for lo, hi in e[2]:
                scored[lo:hi] = True
        elif isinstance(e[1], str):  # a global SGD step of a phase
            phase_updates += 1
            assert all(scored[lo:hi].all() for lo, hi in e[2]), e
    assert phase_updates > 0
    assert check_score_before_update(scores).passed
    # and the API refuses anything else
    with pytest.raises(AssertionError, match="not all scored"):
        ScoredDocuments([(0, 60)], Scores.empty(stream.numel() - 1))
    with pytest.raises(TypeError, match="ScoredDocuments"):
        global_sgd(net, stream, [(0, 60)], params, scores, 1)


def test_phases_take_the_record_boundaries_and_documents():
    from stages.eval.phased import PhaseSchedule, phase_boundaries

    p = EvalParams(mode="ttt", ttt_lora_rank=80, ttt_phased_prefix_docs=2500)
    assert phase_boundaries(50000, p) == [833, 1666, 2500]
    sched = PhaseSchedule(5, EvalParams(**{**LORA, "ttt_phased_prefix_docs": 4,
                                           "ttt_phased_phases": 2}))
    assert sched.boundaries == [2, 4]
    assert sched.after_batch(2, [4]) is None
    assert sched.after_batch(1, [2, 3]) == [2, 3]  # rank 1 before rank 2, cut at the boundary
    assert sched.after_batch(0, [0, 1]) == [0, 1, 2, 3]
    assert sched.after_batch(3, [5]) is None  # all phases done


def test_a_phase_packs_short_documents_into_full_rows_that_keep_them_apart(net):
    """A phase feeds whole seq_len rows of packed documents, never a padded row per document
    (which multiplies memory and compute by seq_len / document length), and a document's loss in
    a packed row does not depend on the document before it."""
    targets = [20] * 30
    stream = stream_of(targets, seed=3)
    scores = Scores.empty(stream.numel() - 1)
    scores.counts[:] = 1  # as if every document had been scored
    params = EvalParams(**{**LORA, "seq_len": 64, "ttt_phased_chunk_tokens": 256,
                           "ttt_phased_epochs": 1, "ttt_phased_lr": 0.0})
    model = build_model(net.config, net.state_dict()).eval()  # as scoring leaves it
    shapes = []
    hook = model.register_forward_hook(lambda m, args, out: shapes.append(tuple(args[0].shape)))
    spans = [(off, off + n) for off, n in segments(stream.numpy(), True)]
    global_sgd(model, stream, ScoredDocuments(spans, scores), params, scores, 0)
    hook.remove()
    assert shapes and all(s == (256 // 64, 64) for s in shapes)  # full rows, no padding
    assert not model.training and not model.doc_attention  # switched back for scoring
    # isolation inside a packed row: change the first document, the second one's loss stays
    model.train()
    model.set_document_attention(True)
    x = stream[:64][None].clone()
    base = model.token_nll(x[:, :-1], x[:, 1:])
    x2 = x.clone()
    x2[0, 5] = (x2[0, 5] + 1) % 64 or 2
    moved = model.token_nll(x2[:, :-1], x2[:, 1:])
    second = slice(20, 39)  # targets of the second document (its BOS is position 20)
    assert torch.allclose(base[0, second], moved[0, second], atol=1e-6)
