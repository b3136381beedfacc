"""Train / evaluate loops shared by search, training and random pruning; cached pretraining."""

from __future__ import annotations

import math
import io
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset
from tqdm.auto import tqdm

from jcw.core.util import atomic_write
from jcw.train.distributed import DistContext
from latency.devices import cache_dir

Batch = tuple[Tensor, Tensor]


IN_MEMORY_BYTES = 1 << 30


def in_memory(dataset: Dataset) -> Dataset:
    """A small dataset offering ``tensors()`` (all items at once) as one TensorDataset, for fast batches."""
    if isinstance(dataset, TensorDataset) or not callable(getattr(dataset, "tensors", None)):
        return dataset
    c, h, w = dataset[0][0].shape
    return TensorDataset(*dataset.tensors()) if len(dataset) * c * h * w * 4 <= IN_MEMORY_BYTES else dataset


def gather(dataset: Dataset, index: Tensor, device: str | torch.device = "cpu") -> Batch:
    """The samples ``index`` of a dataset as one (images, labels) batch on ``device``."""
    if isinstance(dataset, TensorDataset):
        images, labels = dataset.tensors[0][index], dataset.tensors[1][index]
    else:
        items = [dataset[int(i)] for i in index]
        images = torch.stack([torch.as_tensor(x) for x, _ in items])
        labels = torch.as_tensor([int(y) for _, y in items])
    return images.to(device, torch.float32), labels.to(device, torch.long)


def ordered_batches(dataset: Dataset, batch_size: int, limit: int | None = None,
                    device: str | torch.device = "cpu", dist: DistContext = DistContext()) -> list[Batch]:
    """The first ``limit`` samples (all when None) in order, as a list of batches (for evaluation);
    with several processes this rank's share of them (``DistContext.shard``)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    index = torch.arange(dist.rank, n, dist.world_size)
    return [gather(dataset, index[s:s + batch_size], device) for s in range(0, len(index), batch_size)]


class RandomBatches:
    """Callable giving training batches sampled with replacement by an explicit torch.Generator.

    With several processes (``dist``) rank 0 draws each global batch and broadcasts its sample
    indices; every rank gathers its own part of it (``DistContext.split``).
    """

    def __init__(self, dataset: Dataset, batch_size: int, generator: torch.Generator,
                 device: str | torch.device = "cpu", dist: DistContext = DistContext()):
        self.dataset, self.batch_size, self.generator, self.device = dataset, batch_size, generator, device
        self.dist = dist

    def __call__(self) -> Batch:
        index = None
        if self.dist.is_main:
            index = torch.randint(len(self.dataset), (min(self.batch_size, len(self.dataset)),),
                                  generator=self.generator)
        return gather(self.dataset, self.dist.split(self.dist.broadcast_object(index)), self.device)


@torch.no_grad()
def evaluation_sums(model: nn.Module, batches: list[Batch]) -> tuple[float, int, int]:
    """Summed cross-entropy, number of correct top-1 predictions and number of samples of ``model``
    (in eval mode) over the batches."""
    model.eval()
    total, correct, count = 0.0, 0, 0
    for images, labels in batches:
        logits = model(images)
        total += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
        count += len(labels)
    return total, correct, count


def evaluate(model: nn.Module, batches: list[Batch]) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` (in eval mode) over the batches."""
    total, correct, count = evaluation_sums(model, batches)
    return total / count, correct / count


def sgd(params, lr: float, weight_decay: float = 5e-4) -> torch.optim.SGD:
    """The SGD optimiser all our loops use (momentum 0.9, Nesterov)."""
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)


def train(model: nn.Module, dataset: Dataset, epochs: int, batch_size: int, lr: float,
          generator: torch.Generator, device: str | torch.device = "cpu", quiet: bool = False,
          desc: str = "train", masks: dict[str, Tensor] | None = None) -> nn.Module:
    """Trains ``model`` in place for ``epochs`` epochs of shuffled batches with a cosine LR schedule.

    ``masks`` ({module name: bool mask of its weight}) are re-applied after every step, so pruned
    weights stay zero (masked fine-tuning).
    """
    masked = [(model.get_submodule(name).weight, mask.to(device)) for name, mask in (masks or {}).items()]
    model.to(device).train()
    steps_per_epoch = math.ceil(len(dataset) / batch_size)
    optimizer = sgd(model.parameters(), lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    with tqdm(total=epochs * steps_per_epoch, desc=desc, disable=quiet, leave=False) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(dataset), generator=generator)
            for s in range(steps_per_epoch):
                images, labels = gather(dataset, order[s * batch_size:(s + 1) * batch_size], device)
                loss = F.cross_entropy(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for weight, mask in masked:
                        weight.mul_(mask)
                schedule.step()
                bar.update(1)
    return model


def pretrained_path(model_name: str, data_name: str, resolution: int, seed: int, epochs: int) -> Path:
    """Where the pretrained full model for this key is cached."""
    return cache_dir() / "pretrained" / f"{model_name}-{data_name}-{resolution}px-seed{seed}-{epochs}ep.pt"


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save, written atomically (``atomic_write`` of the serialised bytes)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def start_weights(model: nn.Module, model_name: str, weights, classifier: str, data, seed: int, epochs: int,
                  batch_size: int, lr: float, device: str | torch.device = "cpu", quiet: bool = False,
                  cache: bool | None = None) -> nn.Module:
    """The full model's starting point: the ``weights`` checkpoint when given (``jcw.checkpoint.load_weights``,
    torchvision keys accepted, ``classifier`` may change class count; raises UsageError), else
    ``pretrain`` on ``data`` (``cache``: see ``pretrain``)."""
    if weights is not None:
        from jcw.train.checkpoint import load_weights

        load_weights(model, weights, classifier)
        return model
    return pretrain(model, model_name, data, seed, epochs, batch_size, lr, device, quiet, cache)


def pretrain(model: nn.Module, model_name: str, data, seed: int, epochs: int, batch_size: int, lr: float,
             device: str | torch.device = "cpu", quiet: bool = False, cache: bool | None = None) -> nn.Module:
    """Trains the full model on ``data.train`` (a DataBundle); cached for the embedded digits.

    The cache key is model + data + resolution + seed + epochs; ``cache`` None means "only for
    the embedded digits".
    """
    use_cache = data.name == "digits" if cache is None else cache
    path = pretrained_path(model_name, data.name, data.resolution, seed, epochs)
    if use_cache and path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.to(device)
    generator = torch.Generator().manual_seed(seed)
    train(model, data.train, epochs, batch_size, lr, generator, device, quiet, desc=f"pretrain {model_name}")
    if use_cache:
        atomic_torch_save({k: v.cpu() for k, v in model.state_dict().items()}, path)
    return model
