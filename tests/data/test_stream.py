"""The sequential train stream: every train token once per epoch, in order, wrapping; never val."""

import numpy as np
import pytest
import torch

from stages.data.shards import ShardError, load_train_tokens, load_val_tokens, write_shard
from stages.data.stream import SequentialSampler
from stages.train.distributed import DistContext


@pytest.fixture
def stream_dir(tmp_path):
    # Three train shards of unequal sizes (one empty) and a val shard with ids no train shard has.
    write_shard(tmp_path / "train_000000.bin", np.arange(0, 23))
    write_shard(tmp_path / "train_000001.bin", np.arange(0))
    write_shard(tmp_path / "train_000002.bin", np.arange(100, 141))
    write_shard(tmp_path / "val_000000.bin", np.full(50, 999))
    return tmp_path


def _ring(data_dir) -> np.ndarray:
    return load_train_tokens(data_dir).concatenated().astype(np.int64)


def test_one_epoch_reads_every_train_token_once_in_order(stream_dir):
    ring = _ring(stream_dir)  # 64 tokens: 4 rows of 16 (seq_len 15 + 1 target) per epoch
    sampler = SequentialSampler(load_train_tokens(stream_dir), seq_len=15)
    x, y = sampler.sample(4)
    assert x.shape == y.shape == (4, 15)
    rows = torch.cat([x, y[:, -1:]], dim=1)  # (4, 16): each row's inputs and its last target
    np.testing.assert_array_equal(rows.flatten().numpy(), ring)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    assert sampler.epoch == 1.0
    assert not (rows == 999).any()  # no val token


def test_the_stream_wraps_across_shards_and_epochs(stream_dir):
    ring = _ring(stream_dir)
    sampler = SequentialSampler(load_train_tokens(stream_dir), seq_len=9)  # rows of 10
    read = np.concatenate([torch.cat([x, y[:, -1:]], 1).flatten().numpy()
                           for x, y in (sampler.sample(3) for _ in range(5))])
    assert read.size == 150
    np.testing.assert_array_equal(read, np.resize(ring, 150))  # the ring, read round and round


def test_rank_slices_partition_the_global_batch(stream_dir):
    global_x, _ = SequentialSampler(load_train_tokens(stream_dir), seq_len=7).sample(6)
    parts = []
    for rank in range(3):
        x, _ = SequentialSampler(load_train_tokens(stream_dir), seq_len=7).sample(6)
        parts.append(DistContext(rank=rank, world_size=3).local_part(x))
    assert all(p.shape == (2, 7) for p in parts)
    assert torch.equal(torch.cat(parts), global_x)  # disjoint, in order, nothing left out


def test_state_restores_the_place_in_the_stream(stream_dir):
    data = load_train_tokens(stream_dir)
    a = SequentialSampler(data, seq_len=11)
    a.sample(3)
    b = SequentialSampler(data, seq_len=11)
    b.restore(a.state())
    for _ in range(4):
        assert torch.equal(a.sample(2)[0], b.sample(2)[0])
    with pytest.raises(ValueError):
        b.restore({"kind": "random", "rng": {}})


def test_reads_train_tokens_only_and_needs_one_row(stream_dir, tmp_path):
    with pytest.raises(TypeError, match="TrainTokens only"):
        SequentialSampler(load_val_tokens(stream_dir), seq_len=8)
    with pytest.raises(ShardError, match="fewer than one row"):
        SequentialSampler(load_train_tokens(stream_dir), seq_len=64)
