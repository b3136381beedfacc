"""Datasets: embedded scikit-learn digits (default), CIFAR-10/100 python pickles, ImageFolder trees."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from jcw.core.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ACCEPTED = ('"digits" (default), "cifar10:PATH", "cifar100:PATH", or an ImageFolder root '
            "(ROOT/train/<class>/*.png|jpg, ROOT/val/<class>/...)")
CIFAR_LAYOUT = {
    "cifar10": (["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"],
                ["test_batch"], b"labels", 10, "cifar-10-batches-py"),
    "cifar100": (["train"], ["test"], b"fine_labels", 100, "cifar-100-python"),
}


class ImageTensors(Dataset):
    """In-memory uint8 images (N, 3, H, W) served as normalised float32 (3, r, r) tensors + int labels."""

    def __init__(self, images: Tensor, labels: Tensor, resolution: int, mean, std) -> None:
        self.images, self.labels, self.resolution = images, labels.long(), int(resolution)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def _convert(self, x: Tensor) -> Tensor:
        x = x.float() / 255.0
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self._convert(self.images[i: i + 1])[0], int(self.labels[i])

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All items at once: (N, 3, r, r) float32, (N,) int64 (for small sets)."""
        return self._convert(self.images), self.labels


class ImageFiles(Dataset):
    """Image files read on access with PIL: shorter side resized to r, centre-cropped, normalised."""

    def __init__(self, files: list[Path], labels: list[int], resolution: int) -> None:
        self.files, self.labels, self.resolution = files, labels, int(resolution)
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        r = self.resolution
        try:
            with Image.open(self.files[i]) as im:
                im = im.convert("RGB")
                scale = r / min(im.size)
                w, h = max(r, round(im.width * scale)), max(r, round(im.height * scale))
                im = im.resize((w, h), Image.BILINEAR)
                left, top = (w - r) // 2, (h - r) // 2
                arr = np.asarray(im.crop((left, top, left + r, top + r)), dtype=np.float32) / 255.0
        except OSError as e:
            raise UsageError(f"cannot read image {self.files[i]}: {e}") from None
        x = torch.from_numpy(arr).permute(2, 0, 1)
        return (x - self.mean) / self.std, self.labels[i]


@dataclass
class DataBundle:
    """A train/val pair of datasets yielding ((3, r, r) float32 image, int label)."""

    train: Dataset
    val: Dataset
    num_classes: int
    resolution: int
    name: str


def _channel_stats(images: Tensor, resolution: int, limit: int = 2048) -> tuple[Tensor, Tensor]:
    """Per-channel mean/std of (up to ``limit`` evenly spaced) images as served at ``resolution``."""
    pick = torch.linspace(0, len(images) - 1, min(limit, len(images))).round().long()
    x = ImageTensors(images[pick], torch.zeros(len(pick)), resolution, (0.0,) * 3, (1.0,) * 3).tensors()[0]
    return x.mean((0, 2, 3)), x.std((0, 2, 3)).clamp_min(1e-6)


def _in_memory(name: str, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], num_classes: int,
               resolution: int) -> DataBundle:
    mean, std = _channel_stats(train[0], resolution)
    return DataBundle(ImageTensors(*train, resolution, mean, std), ImageTensors(*val, resolution, mean, std),
                      num_classes, resolution, name)


def load_digits(resolution: int = 32, seed: int = 0, val_fraction: float = 0.2) -> DataBundle:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), 3 channels, resized,
    normalised with train statistics, split stratified by class with ``seed``."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    digits = sk_digits()
    images = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8))
    images = images[:, None].expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target.astype(np.int64))
    tr, va = train_test_split(np.arange(len(labels)), test_size=val_fraction, stratify=digits.target,
                              random_state=seed)
    tr, va = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(va))
    return _in_memory("digits", (images[tr], labels[tr]), (images[va], labels[va]), 10, resolution)


def _unpickle(path: Path, label_key: bytes) -> tuple[Tensor, Tensor]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int64)
        images = data.reshape(len(data), 3, 32, 32)
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise UsageError(f"{path} is not a CIFAR python pickle batch (dict with b'data' (N, 3072) uint8 and "
                        f"{label_key!r}): {e!r}") from None
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_cifar(kind: str, root: str | Path, resolution: int = 32) -> DataBundle:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test) in the python pickle format."""
    train_files, val_files, label_key, num_classes, subdir = CIFAR_LAYOUT[kind]
    root = Path(root).expanduser()
    if (root / subdir).is_dir():
        root = root / subdir
    layout = f"{root}/{{{','.join(train_files + val_files)}}} (the python version, e.g. {subdir}/)"
    if not root.is_dir():
        raise UsageError(f"{kind} directory {root} does not exist; expected {layout}")
    missing = [f for f in train_files + val_files if not (root / f).is_file()]
    if missing:
        raise UsageError(f"{kind} directory {root} lacks {', '.join(missing)}; expected {layout}")

    def load(files: list[str]) -> tuple[Tensor, Tensor]:
        parts = [_unpickle(root / f, label_key) for f in files]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    train, val = load(train_files), load(val_files)
    bad = int(max(train[1].max(), val[1].max()))
    if min(int(train[1].min()), int(val[1].min())) < 0 or bad >= num_classes:
        raise UsageError(f"{root}: labels must lie in 0..{num_classes - 1}, found {bad}")
    return _in_memory(kind, train, val, num_classes, resolution)


def load_image_folder(root: str | Path, resolution: int = 224) -> DataBundle:
    """ROOT/train/<class>/*.png|jpg|jpeg and ROOT/val/<class>/...; classes = sorted train subfolders."""
    root = Path(root).expanduser()
    layout = (f"expected {root}/train/<class>/*.png|jpg|jpeg and {root}/val/<class>/*.png|jpg|jpeg "
              f"(val classes must also exist under train)")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UsageError(f"ImageFolder {root}: missing directory {root / split}; {layout}")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise UsageError(f"ImageFolder {root}: no class folders in {root / 'train'}; {layout}")
    index = {c: i for i, c in enumerate(classes)}

    def scan(split: str) -> ImageFiles:
        files, labels = [], []
        for d in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            if d.name not in index:
                raise UsageError(f"ImageFolder {root}: class {d.name!r} in {split} is not in train; {layout}")
            found = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            labels += [index[d.name]] * len(found)
        if not files:
            raise UsageError(f"ImageFolder {root}: no images under {root / split}; {layout}")
        return ImageFiles(files, labels, resolution)

    return DataBundle(scan("train"), scan("val"), len(classes), int(resolution), f"imagefolder:{root}")


def load_dataset(spec: str | Path | None = None, resolution: int | None = None, seed: int = 0) -> DataBundle:
    """Load a dataset by spec: None/"digits", "cifar10:PATH", "cifar100:PATH" or an ImageFolder root.

    Default resolution: 32 (digits, CIFAR) or 224 (ImageFolder).  ``seed`` drives the digits split.
    """
    if resolution is not None and int(resolution) < 1:
        raise UsageError(f"resolution must be a positive integer, got {resolution}")
    text = "digits" if spec is None else str(spec)
    if text == "digits":
        return load_digits(resolution or 32, seed)
    kind, sep, path = text.partition(":")
    if sep and kind in CIFAR_LAYOUT:
        if not path:
            raise UsageError(f"{kind}: missing PATH in {text!r}; accepted: {ACCEPTED}")
        return load_cifar(kind, path, resolution or 32)
    root = Path(text).expanduser()
    if not root.is_dir():
        raise UsageError(f"dataset {text!r} is neither a known name nor an existing directory; accepted: {ACCEPTED}")
    return load_image_folder(root, resolution or 224)


def as_bundle(data, num_classes: int | None, resolution: int | None = None, seed: int = 0) -> DataBundle:
    """The DataBundle of ``data``: a spec string (``load_dataset``), a DataBundle, or a (train, val) pair of
    Datasets yielding (image tensor (3, r, r), int label).  ``num_classes``: the model's class count (None:
    unchecked); the data's labels must fit it."""
    if isinstance(data, DataBundle):
        bundle = data
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, Dataset) for d in data):
        train, val = data
        if len(train) == 0 or len(val) == 0:
            raise UsageError("data: the train and val datasets must both be non-empty")
        image, label = train[0]
        image = torch.as_tensor(image)
        if image.dim() != 3 or image.shape[1] != image.shape[2] or isinstance(label, float):
            raise UsageError(f"data: items must be (image tensor of shape (C, r, r), int label), got image shape "
                             f"{tuple(image.shape)} and label {label!r}")
        if num_classes is None:
            raise UsageError("data: a (train, val) pair needs a model whose classifier gives the class count")
        bundle = DataBundle(train, val, num_classes, int(image.shape[-1]), "custom")
    elif data is None or isinstance(data, (str, Path)):
        bundle = load_dataset(data, resolution, seed)
    else:
        raise UsageError(f"data must be a dataset spec ({ACCEPTED}), a jcw.data.DataBundle or a (train, val) pair "
                         f"of torch Datasets, got {type(data).__name__}")
    if num_classes is not None and bundle.num_classes > num_classes:
        raise UsageError(f"data {bundle.name} has {bundle.num_classes} classes but the model's classifier has "
                         f"{num_classes} outputs; create the model with num_classes={bundle.num_classes}")
    return bundle
