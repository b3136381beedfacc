"""Least-squares feature-map reconstruction of a channel-pruned network (seed 002), merged into its weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from jcw.core.netspec import NetSpec


@dataclass(frozen=True)
class LayerFit:
    """Relative feature-map error ||F_o - F_p|| / ||F_o|| of one layer before and after its X."""

    name: str
    before: float
    after: float


def _columns(out: Tensor) -> Tensor:
    """(N, C, H, W) or (N, C) layer output -> (C, N*H*W) float64 matrix of feature columns."""
    return out.detach().transpose(0, 1).reshape(out.shape[1], -1).double()


def _modules(model: nn.Module, spec: NetSpec) -> dict[str, nn.Module]:
    found = dict(model.named_modules())
    missing = [layer.name for layer in spec.layers if layer.name not in found]
    if missing:
        raise ValueError(f"model has no module(s) {missing} named in the {spec.model} spec")
    return {layer.name: found[layer.name] for layer in spec.layers}


def _solve(target: Tensor, pruned: Tensor, ridge: float, diagonal: bool) -> Tensor:
    """X = argmin ||target - X pruned||^2 + ridge * mean(diag(G)) * ||X||^2 with G = pruned pruned^T.

    ``diagonal``: X restricted to a diagonal (a depthwise conv cannot mix channels).
    """
    if diagonal:
        energy = (pruned * pruned).sum(1)
        return torch.diag((target * pruned).sum(1) / (energy + ridge * energy.mean() + 1e-30))
    gram = pruned @ pruned.T
    n = gram.shape[0]
    damp = ridge * gram.diagonal().mean() + 1e-30
    return torch.linalg.solve(gram + damp * torch.eye(n, dtype=gram.dtype), pruned @ target.T).T


def _merge(module: nn.Module, x: Tensor) -> None:
    """Replace the layer's weight W by X W and bias b by X b (X mixes output channels)."""
    w = module.weight.data
    x = x.to(w.dtype)
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        scale = x.diagonal()
        module.weight.data = w * scale.view(-1, *([1] * (w.dim() - 1)))
    else:
        module.weight.data = (x @ w.reshape(w.shape[0], -1)).reshape(w.shape)
    if module.bias is not None:
        module.bias.data = x @ module.bias.data


def _apply(out: Tensor, x: Tensor) -> Tensor:
    """X applied to the channel dimension of a layer output."""
    return torch.einsum("oc,nc...->no...", x.to(out.dtype), out)


@torch.no_grad()
def reconstruct(original: nn.Module, pruned: nn.Module, spec: NetSpec, images: Tensor, positions: int = 4096,
                ridge: float = 1e-6, generator: torch.Generator | None = None) -> list[LayerFit]:
    """Fit and merge X = argmin ||F_o - X F_p||^2 into every layer of ``pruned``, input to output.

    ``original`` is the full, channel-ordered network and ``pruned`` a prefix slice of it (each
    layer keeps its first ``out_ch`` channels), so F_o is the original layer output with the
    pruned channels removed and F_p the pruned network's output of the same layer (before any
    BatchNorm), both at up to ``positions`` sampled (image, y, x) columns of ``images``.  One
    forward pass of ``pruned`` fits all layers: each layer's X is solved when its output is
    produced, merged into its weight and bias, and applied to that output, so later layers see
    the already reconstructed features.  Depthwise convs get a diagonal X.  ``pruned`` is
    modified in place (weights replaced, never written through shared storage).

    Returns the relative error of every layer before and after its fit.
    """
    if images.dim() != 4 or images.shape[0] < 1:
        raise ValueError(f"images must be a non-empty (N, 3, H, W) batch, got shape {tuple(images.shape)}")
    if positions < 1:
        raise ValueError(f"positions must be >= 1, got {positions}")
    orig_modules, pruned_modules = _modules(original, spec), _modules(pruned, spec)
    targets: dict[str, Tensor] = {}
    picks: dict[str, Tensor] = {}

    def record(name: str):
        def hook(_module, _inputs, out):
            cols = _columns(out)
            if cols.shape[1] > positions:
                picks[name] = torch.randperm(cols.shape[1], generator=generator)[:positions]
                cols = cols[:, picks[name]]
            targets[name] = cols
        return hook

    fits: list[LayerFit] = []

    def fit(name: str):
        def hook(module, _inputs, out):
            cols = _columns(out)
            if name in picks:
                cols = cols[:, picks[name]]
            target = targets[name][: cols.shape[0]]
            x = _solve(target, cols, ridge, diagonal=isinstance(module, nn.Conv2d) and module.groups > 1)
            scale = target.norm().clamp_min(1e-30)
            fits.append(LayerFit(name, float((target - cols).norm() / scale), float((target - x @ cols).norm() / scale)))
            _merge(module, x)
            return _apply(out, x)
        return hook

    modes = (original.training, pruned.training)
    original.eval()
    pruned.eval()
    _run_hooked(original, orig_modules, record, images)
    _run_hooked(pruned, pruned_modules, fit, images)
    original.train(modes[0])
    pruned.train(modes[1])
    return fits


@torch.no_grad()
def feature_errors(original: nn.Module, pruned: nn.Module, spec: NetSpec, images: Tensor) -> dict[str, float]:
    """Relative error ||F_o - F_p|| / ||F_o|| of every layer's output (kept channels) on ``images``."""
    outputs: dict[str, list[Tensor]] = {layer.name: [] for layer in spec.layers}

    def record(name: str):
        def hook(_module, _inputs, out):
            outputs[name].append(_columns(out))
        return hook

    modes = (original.training, pruned.training)
    for model in (original, pruned):
        model.eval()
        handles = [m.register_forward_hook(record(n)) for n, m in _modules(model, spec).items()]
        try:
            model(images)
        finally:
            for h in handles:
                h.remove()
    original.train(modes[0])
    pruned.train(modes[1])
    errors = {}
    for name, (full, small) in outputs.items():
        target = full[: small.shape[0]]
        errors[name] = float((target - small).norm() / target.norm().clamp_min(1e-30))
    return errors


def _run_hooked(model: nn.Module, modules: dict, make_hook, images: Tensor) -> None:
    """One forward pass of ``model`` with ``make_hook(name)`` as forward hook on every module of ``modules``."""
    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items()]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
