"""ADMM toward a 4x1-block sparsity pattern: projection, dual updates, gradient penalty, masks."""

from __future__ import annotations

import torch
from torch import nn

from jcw.prune.materialize import block_mask


def project_blocks(weight: torch.Tensor, density: float) -> torch.Tensor:
    """Euclidean projection onto the 4x1-block pattern: keep the top round(density * n_blocks) blocks by L2."""
    return weight * block_mask(weight, density).to(weight.dtype)


def pattern_masks(params: dict[str, torch.Tensor], densities: dict[str, float]) -> dict[str, torch.Tensor]:
    """The 4x1-block mask of every layer's current weights at its density."""
    return {n: block_mask(p.detach(), densities[n]) for n, p in params.items()}


def weight_layers(model: nn.Module, densities: dict[str, float]) -> dict[str, nn.Parameter]:
    """The weight parameter of every named layer in ``densities`` (module paths as in the Arch)."""
    modules = dict(model.named_modules())
    missing = sorted(set(densities) - set(modules))
    if missing:
        raise ValueError(f"model has no layers named {', '.join(missing)}")
    return {name: modules[name].weight for name in densities}


def energy_outside(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> float:
    """Fraction of the squared L2 norm of the masked layers' weights that lies outside their masks."""
    outside = total = 0.0
    for name, mask in masks.items():
        w = params[name].detach()
        total += float(w.pow(2).sum())
        outside += float(w.pow(2).masked_fill(mask, 0.0).sum())
    return outside / total if total > 0 else 0.0


@torch.no_grad()
def apply_masks(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    """Zero, in place, every weight outside its layer's mask."""
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))


class BlockADMM:
    """ADMM for min loss(W) s.t. W has the 4x1-block pattern of its density, per layer.

    Augmented term rho/2 ||W - Z + U||^2: its gradient rho (W - Z + U) is added to the loss gradient
    every step (``add_penalty_grad``); once per epoch ``update`` sets Z = project(W + U) and U += W - Z.
    """

    def __init__(self, params: dict[str, nn.Parameter], densities: dict[str, float], rho: float = 0.01):
        if rho <= 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        bad = {n: d for n, d in densities.items() if not 0.0 < d <= 1.0}
        if bad:
            raise ValueError(f"densities must lie in (0, 1], got {bad}")
        self.params = params
        self.densities = dict(densities)
        self.rho = float(rho)
        with torch.no_grad():
            self.z = {n: project_blocks(p.detach(), self.densities[n]) for n, p in params.items()}
            self.u = {n: torch.zeros_like(p) for n, p in params.items()}

    @torch.no_grad()
    def add_penalty_grad(self) -> None:
        """grad += rho (W - Z + U) for every constrained layer (call after backward, before the step)."""
        for name, p in self.params.items():
            penalty = (p - self.z[name] + self.u[name]).mul_(self.rho)
            if p.grad is None:
                p.grad = penalty
            else:
                p.grad.add_(penalty)

    @torch.no_grad()
    def update(self) -> None:
        """One ADMM outer step: Z = project(W + U), then U = U + W - Z."""
        for name, p in self.params.items():
            self.z[name] = project_blocks(p + self.u[name], self.densities[name])
            self.u[name].add_(p - self.z[name])

    def primal_residual(self) -> float:
        """||W - Z|| / ||W|| over all constrained layers: 0 when the weights have the pattern."""
        diff = sum(float((p.detach() - self.z[n]).pow(2).sum()) for n, p in self.params.items())
        norm = sum(float(p.detach().pow(2).sum()) for p in self.params.values())
        return (diff / norm) ** 0.5 if norm > 0 else 0.0

    def masks(self) -> dict[str, torch.Tensor]:
        """The 4x1-block masks of the current weights at each layer's density."""
        return pattern_masks(self.params, self.densities)

    def state_dict(self) -> dict:
        """rho, densities, Z and U (on the CPU)."""
        return {"rho": self.rho, "densities": dict(self.densities),
                "z": {n: t.cpu() for n, t in self.z.items()}, "u": {n: t.cpu() for n, t in self.u.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state["z"]) != set(self.params):
            raise ValueError("ADMM state does not match the constrained layers")
        self.rho = float(state["rho"])
        self.densities = dict(state["densities"])
        self.z = {n: t.to(self.params[n].device, copy=True) for n, t in state["z"].items()}
        self.u = {n: t.to(self.params[n].device, copy=True) for n, t in state["u"].items()}
