"""Turn a full model + Arch into a physically smaller dense model and its 4x1 block masks."""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import Tensor, nn

from jcw.prune.criteria import score_channels
from jcw.layers import describe, norm_layers
from jcw.core.space import BLOCK, Arch, n_kept_blocks
from jcw.core.netspec import LayerSpec, NetSpec


def _permute_(t: Tensor | None, perm: Tensor, dim: int = 0) -> None:
    if t is not None:
        t.data.copy_(t.data.index_select(dim, perm.to(t.device)))


def order_channels(model: nn.Module, spec: NetSpec, criterion: str = "l1", batches: Iterable | None = None,
                   generator: torch.Generator | None = None) -> dict[int, Tensor]:
    """Permute every coupling group's channels IN PLACE, most important first; the function is unchanged.

    Returns {group id: permutation} (new channel i = old channel perm[i]); frozen groups keep their order.
    """
    scores = score_channels(model, spec, criterion, batches, generator)
    perms = {g: torch.argsort(s, descending=True, stable=True) for g, s in scores.items() if not spec.groups[g].frozen}
    norms = norm_layers(model)
    with torch.no_grad():
        for layer in spec.layers:
            mod = model.get_submodule(layer.name)
            if layer.group in perms:
                p = perms[layer.group]
                _permute_(mod.weight, p)
                _permute_(mod.bias, p)
                if layer.name in norms:
                    bn = model.get_submodule(norms[layer.name])
                    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                        _permute_(t, p)
            if layer.groups == 1 and any(g in perms for g, _ in layer.input_parts):
                _permute_(mod.weight, input_index(layer, perms), dim=1)
    return perms


def input_index(layer: LayerSpec, order: dict[int, Tensor], kept: dict[int, int] | None = None) -> Tensor:
    """Indices of a layer's input channels: per input part (see ``LayerSpec.input_parts``), at its
    offset, the first ``kept[group]`` of the group's ``order`` (identity and all channels where absent)."""
    index, offset = [], 0
    for g, full in layer.input_parts:
        idx = order.get(g, torch.arange(full))
        index.append(offset + idx[: (kept or {}).get(g, full)])
        offset += full
    return torch.cat(index)


def block_mask(weight: Tensor, density: float) -> Tensor:
    """Bool mask keeping round(density * n_blocks) 4x1 blocks (4 consecutive output channels at one
    (in, kh, kw)) with the largest L2 norm; ties go to the lower index.  Same shape as ``weight``."""
    out = weight.shape[0]
    pad = -out % BLOCK
    w = torch.cat([weight.detach(), weight.new_zeros((pad, *weight.shape[1:]))]) if pad else weight.detach()
    blocks = w.reshape(-1, BLOCK, *weight.shape[1:]).pow(2).sum(1)  # (out/4, in, kh, kw)
    keep = int(n_kept_blocks(blocks.numel(), density))
    flat = torch.zeros(blocks.numel(), dtype=torch.bool, device=weight.device)
    flat[torch.argsort(blocks.flatten(), descending=True, stable=True)[:keep]] = True
    mask = flat.reshape(blocks.shape).unsqueeze(1).expand(-1, BLOCK, *weight.shape[1:])
    return mask.reshape(w.shape)[:out].clone()


def _check_arch(spec: NetSpec, arch: Arch) -> dict[int, int]:
    """Kept channels per coupling group of a consistent ``arch`` (ValueError naming the first clash)."""
    if [c.name for c in arch.layers] != [x.name for x in spec.layers]:
        raise ValueError(f"arch of {arch.model!r} does not list the layers of {spec.model!r} in order")
    for x, c in zip(spec.layers, arch.layers):
        if not (1 <= c.out_ch <= x.out_ch and 1 <= c.in_ch <= x.in_ch):
            raise ValueError(f"layer {x.name!r}: arch channels ({c.out_ch}, {c.in_ch}) exceed the full "
                             f"({x.out_ch}, {x.in_ch})")
        if x.kind == "depthwise" and c.out_ch != c.in_ch:
            raise ValueError(f"depthwise layer {x.name!r} needs out_ch == in_ch, got {c.out_ch}, {c.in_ch}")
        if x.kind == "fc" and x.group < 0 and c.out_ch != x.out_ch:
            raise ValueError(f"fc {x.name!r} keeps all {x.out_ch} classes, arch has {c.out_ch}")
    kept: dict[int, int] = {}
    for x, c in zip(spec.layers, arch.layers):
        if x.group >= 0 and kept.setdefault(x.group, c.out_ch) != c.out_ch:
            raise ValueError(f"layer {x.name!r} keeps {c.out_ch} channels but its coupling group {x.group} "
                             f"keeps {kept[x.group]}")
    for x, c in zip(spec.layers, arch.layers):
        reads = sum(n if g < 0 else kept[g] for g, n in x.input_parts)
        if c.in_ch != reads:
            raise ValueError(f"layer {x.name!r} reads {c.in_ch} channels but its input groups "
                             f"{[g for g, _ in x.input_parts]} keep {reads}")
    return kept


def slice_model(model: nn.Module, spec: NetSpec, arch: Arch) -> nn.Module:
    """A copy of an already-ordered ``model`` keeping the first out_ch channels of every layer and the
    first kept channels of every part of its input."""
    kept = _check_arch(spec, arch)
    norms = norm_layers(model)
    small = copy.deepcopy(model)
    with torch.no_grad():
        for x, c in zip(spec.layers, arch.layers):
            old = small.get_submodule(x.name)
            if x.groups > 1 and x.kind != "depthwise":
                continue  # a grouped conv is frozen: kept whole
            kw = {"device": old.weight.device, "dtype": old.weight.dtype}
            cols = input_index(x, {}, kept).to(old.weight.device)
            if x.kind == "fc":
                new = nn.Linear(c.in_ch, c.out_ch, bias=old.bias is not None, **kw)
                new.weight.copy_(old.weight[: c.out_ch, cols])
            else:
                depthwise = x.kind == "depthwise"
                new = nn.Conv2d(c.in_ch, c.out_ch, old.kernel_size, old.stride, old.padding, old.dilation,
                                groups=c.out_ch if depthwise else 1, bias=old.bias is not None,
                                padding_mode=old.padding_mode, **kw)
                new.weight.copy_(old.weight[: c.out_ch] if depthwise else old.weight[: c.out_ch, cols])
                if x.name in norms:
                    _slice_norm(small, norms[x.name], c.out_ch)
            if old.bias is not None:
                new.bias.copy_(old.bias[: c.out_ch])
            new.train(old.training)
            small.set_submodule(x.name, new)
    return small


def _slice_norm(model: nn.Module, name: str, keep: int) -> None:
    old = model.get_submodule(name)
    new = nn.BatchNorm2d(keep, old.eps, old.momentum, old.affine, old.track_running_stats,
                         device=old.running_mean.device, dtype=old.running_mean.dtype)
    for key, value in old.state_dict().items():
        getattr(new, key).copy_(value if value.dim() == 0 else value[:keep])
    new.train(old.training)
    model.set_submodule(name, new)


def materialize(model: nn.Module, arch: Arch, criterion: str = "l1", spec: NetSpec | None = None,
                batches: Iterable | None = None,
                generator: torch.Generator | None = None) -> tuple[nn.Module, dict[str, Tensor]]:
    """(small dense model with 4x1 block masks applied, {conv name: bool mask}); ``model`` is not modified.

    Channels of every coupling group are ordered by ``criterion`` and the first k kept; then every
    conv keeps round(density * n_blocks) of its 4x1 blocks (depthwise convs: all).
    """
    spec = spec or describe(model, arch.resolution, arch.model)
    ordered = copy.deepcopy(model)
    order_channels(ordered, spec, criterion, batches, generator)
    small = slice_model(ordered, spec, arch)
    masks = {}
    with torch.no_grad():
        for x, c in zip(spec.layers, arch.layers):
            if x.kind == "fc":
                continue
            weight = small.get_submodule(x.name).weight
            mask = block_mask(weight, c.density) if x.kind != "depthwise" else torch.ones_like(weight, dtype=torch.bool)
            weight.mul_(mask)
            masks[x.name] = mask
    return small, masks
