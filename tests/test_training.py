import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from jcw.train.loops import RandomBatches, evaluate, gather, in_memory, ordered_batches, pretrain, pretrained_path, train


class _Items(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])

    def tensors(self):
        return self.x, self.y


def _blobs(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 3, 4, 4, generator=g) * 0.5 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
    return x, y


def _net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def test_gather_is_the_same_for_tensor_and_item_datasets():
    x, y = _blobs()
    idx = torch.tensor([5, 0, 17])
    a = gather(TensorDataset(x, y), idx)
    b = gather(_Items(x, y), idx)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert isinstance(in_memory(_Items(x, y)), TensorDataset)


def test_random_batches_follow_the_generator():
    data = TensorDataset(*_blobs())
    a = RandomBatches(data, 16, torch.Generator().manual_seed(1))
    b = RandomBatches(data, 16, torch.Generator().manual_seed(1))
    c = RandomBatches(data, 16, torch.Generator().manual_seed(2))
    first = a()
    assert torch.equal(first[0], b()[0])
    assert not torch.equal(first[0], c()[0])


def test_masked_training_learns_and_keeps_pruned_weights_zero():
    train_set, val_set = TensorDataset(*_blobs(256, 0)), TensorDataset(*_blobs(128, 1))
    model = _net()
    val = ordered_batches(val_set, 64)
    before, _ = evaluate(model, val)
    mask = torch.rand(model[0].weight.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    with torch.no_grad():
        model[0].weight.mul_(mask)
    train(model, train_set, 3, 32, 0.1, torch.Generator().manual_seed(0), quiet=True, masks={"0": mask})
    after, acc = evaluate(model, val)
    assert after < before and acc > 0.9
    assert (model[0].weight[~mask] == 0).all()


def test_pretraining_is_cached_per_key(tmp_path, monkeypatch):
    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path))

    class Bundle:
        train, val, num_classes, resolution, name = TensorDataset(*_blobs()), None, 2, 4, "digits"

    a = pretrain(_net(), "tiny", Bundle, seed=5, epochs=1, batch_size=32, lr=0.05, quiet=True)
    path = pretrained_path("tiny", "digits", 4, 5, 1)
    assert path.exists()
    b = pretrain(_net(), "tiny", Bundle, seed=5, epochs=1, batch_size=32, lr=0.05, quiet=True)
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k
    assert pretrained_path("tiny", "digits", 4, 6, 1) != path
