"""The official shard format, typed train/validation splits, and the seeded window sampler."""

import numpy as np
import pytest

from stages.data.shards import (
    HEADER_BYTES,
    SHARD_MAGIC,
    ShardError,
    TrainTokens,
    ValTokens,
    WindowSampler,
    find_tokenizer,
    load_train_tokens,
    load_val_tokens,
    read_shard,
    shard_paths,
    write_shard,
)


def test_shard_round_trip_and_header(tmp_path):
    tokens = np.array([1, 5, 65535, 0, 42], dtype=np.uint16)
    path = tmp_path / "train_000000.bin"
    write_shard(path, tokens)
    raw = path.read_bytes()
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert header[0] == SHARD_MAGIC and header[1] == 1 and header[2] == 5
    assert not header[3:].any()
    assert len(raw) == HEADER_BYTES + 2 * 5
    np.testing.assert_array_equal(read_shard(path), tokens)


def _corrupt(path, offset, value):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 4] = np.int32(value).tobytes()
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, message", [
    (lambda p: _corrupt(p, 0, 12345), "bad magic 12345"),
    (lambda p: _corrupt(p, 4, 2), "unsupported shard version 2"),
    (lambda p: p.write_bytes(p.read_bytes()[:-2]), "does not match the header's 3 tokens"),
    (lambda p: p.write_bytes(p.read_bytes() + b"\0\0"), "does not match the header's 3 tokens"),
    (lambda p: p.write_bytes(b"short"), "shorter than the 1024-byte shard header"),
])
def test_reader_rejects_bad_shards(tmp_path, damage, message):
    path = tmp_path / "val_000000.bin"
    write_shard(path, np.array([1, 2, 3]))
    damage(path)
    with pytest.raises(ShardError) as e:
        read_shard(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_official_names_and_typed_splits(tmp_path):
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(10))
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(4))
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.arange(4))  # a sidecar, not tokens
    (tmp_path / "fineweb_1024_bpe.model").write_bytes(b"x")
    assert [p.name for p in shard_paths(tmp_path, "val")] == ["fineweb_val_000000.bin"]
    assert find_tokenizer(tmp_path).name == "fineweb_1024_bpe.model"
    train, val = load_train_tokens(tmp_path), load_val_tokens(tmp_path)
    assert isinstance(train, TrainTokens) and not isinstance(train, ValTokens)
    assert isinstance(val, ValTokens) and not isinstance(val, TrainTokens)
    assert train.num_tokens == 10 and val.num_tokens == 4


def test_missing_shards_and_tokenizer(tmp_path):
    with pytest.raises(ShardError, match="no train shards"):
        shard_paths(tmp_path, "train")
    with pytest.raises(ShardError, match="no tokenizer"):
        find_tokenizer(tmp_path)


def test_window_sampler_is_seeded_and_draws_input_target_pairs(data_dir):
    train = load_train_tokens(data_dir)
    stream = np.concatenate(train.shards).astype(np.int64)
    x, y = WindowSampler(train, 16, seed=3).sample(5)
    again, _ = WindowSampler(train, 16, seed=3).sample(5)
    other, _ = WindowSampler(train, 16, seed=4).sample(5)
    assert x.shape == y.shape == (5, 16)
    assert (x == again).all() and not (x == other).all()
    assert (x[:, 1:] == y[:, :-1]).all()  # targets are the inputs shifted by one
    windows = {tuple(stream[i:i + 17]) for i in range(len(stream) - 16)}
    assert all(tuple(xi.tolist()) + (int(yi[-1]),) in windows for xi, yi in zip(x, y, strict=True))
    with pytest.raises(TypeError, match="TrainTokens only"):
        WindowSampler(load_val_tokens(data_dir), 16, seed=0)
