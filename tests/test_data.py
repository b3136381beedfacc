"""Datasets: digits default, CIFAR pickles and ImageFolder trees built in temp dirs, clear errors."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from jcw.data import load_dataset
from jcw.core.errors import UsageError


def test_digits_default_split_and_normalisation():
    d = load_dataset()
    assert (d.name, d.num_classes, d.resolution) == ("digits", 10, 32)
    assert len(d.train) + len(d.val) == 1797 and abs(len(d.val) / 1797 - 0.2) < 0.01
    x, y = d.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    xs, ys = d.train.tensors()
    assert torch.equal(xs[0], x) and torch.equal(xs[:, 0], xs[:, 2])
    assert abs(xs.mean().item()) < 0.05 and abs(xs.std().item() - 1) < 0.05
    assert torch.bincount(d.val.tensors()[1]).min() >= 30  # stratified: every class present
    again, other = load_dataset("digits", seed=0), load_dataset("digits", seed=1, resolution=16)
    assert torch.equal(again.val.tensors()[1], d.val.tensors()[1])
    assert not torch.equal(other.val.tensors()[1], d.val.tensors()[1])
    assert other.val[0][0].shape == (3, 16, 16)


def _write_batch(path, n, label_key, classes, rng):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    with open(path, "wb") as f:
        pickle.dump({b"data": data, label_key: list(rng.integers(0, classes, n))}, f)


def test_cifar10_and_cifar100(tmp_path):
    rng = np.random.default_rng(0)
    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    for i in range(1, 6):
        _write_batch(c10 / f"data_batch_{i}", 4, b"labels", 10, rng)
    _write_batch(c10 / "test_batch", 3, b"labels", 10, rng)
    d = load_dataset(f"cifar10:{tmp_path}")  # the parent of cifar-10-batches-py works too
    assert (d.name, d.num_classes, len(d.train), len(d.val)) == ("cifar10", 10, 20, 3)
    assert d.train[0][0].shape == (3, 32, 32)
    assert load_dataset(f"cifar10:{c10}", resolution=40).val[1][0].shape == (3, 40, 40)
    c100 = tmp_path / "c100"
    c100.mkdir()
    _write_batch(c100 / "train", 5, b"fine_labels", 100, rng)
    _write_batch(c100 / "test", 2, b"fine_labels", 100, rng)
    d = load_dataset(f"cifar100:{c100}")
    assert (d.num_classes, len(d.train), len(d.val)) == (100, 5, 2)


def test_cifar_errors_name_path_and_layout(tmp_path):
    with pytest.raises(UsageError, match=r"nope.*does not exist.*data_batch_1"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}")
    (tmp_path / "train").write_bytes(b"not a pickle")
    (tmp_path / "test").write_bytes(b"")
    with pytest.raises(UsageError, match=r"train is not a CIFAR python pickle"):
        load_dataset(f"cifar100:{tmp_path}")
    with pytest.raises(UsageError, match="lacks data_batch_1"):
        load_dataset(f"cifar10:{tmp_path}")
    with pytest.raises(UsageError, match="missing PATH"):
        load_dataset("cifar10:")


def _png(path, rng, size=(20, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 3), ("val", 1)):
        for cls in ("cat", "dog"):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", rng)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    d = load_dataset(tmp_path, resolution=8)
    assert (d.num_classes, len(d.train), len(d.val), d.resolution) == (2, 6, 2, 8)
    x, y = d.val[1]
    assert x.shape == (3, 8, 8) and y == 1 and x.std() > 0
    assert load_dataset(str(tmp_path)).train[0][0].shape == (3, 224, 224)


def test_image_folder_errors(tmp_path):
    with pytest.raises(UsageError, match="neither a known name nor an existing directory"):
        load_dataset(tmp_path / "missing")
    _png(tmp_path / "train" / "a" / "0.png", np.random.default_rng(0))
    with pytest.raises(UsageError, match=r"missing directory .*val.*train/<class>"):
        load_dataset(tmp_path)
    (tmp_path / "val" / "b").mkdir(parents=True)
    with pytest.raises(UsageError, match="class 'b' in val is not in train"):
        load_dataset(tmp_path)
    (tmp_path / "val" / "b").rmdir()
    (tmp_path / "val" / "a").mkdir()
    with pytest.raises(UsageError, match="no images under"):
        load_dataset(tmp_path)
    (tmp_path / "val" / "a" / "0.jpg").write_bytes(b"broken")
    d = load_dataset(tmp_path, resolution=8)
    with pytest.raises(UsageError, match="cannot read image"):
        d.val[0]
