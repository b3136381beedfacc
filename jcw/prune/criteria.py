"""Channel importance criteria: per-coupling-group scores (higher = more important) and their registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from jcw.layers import trace
from jcw.core.netspec import NetSpec

# fn(model, spec, batches, generator) -> {group id: scores of the group's channels}
CriterionFn = Callable[[nn.Module, NetSpec, "Iterable | None", "torch.Generator | None"], dict[int, Tensor]]


@dataclass(frozen=True)
class Criterion:
    """A registered criterion; ``needs_data`` ones require calibration ``batches``."""

    name: str
    fn: CriterionFn
    needs_data: bool = False


_CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, fn: CriterionFn | None = None, *, needs_data: bool = False):
    """Register ``fn`` under ``name``; usable as ``@register_criterion("name")``."""

    def add(f: CriterionFn) -> CriterionFn:
        if name in _CRITERIA:
            raise ValueError(f"criterion {name!r} is already registered")
        _CRITERIA[name] = Criterion(name, f, needs_data)
        return f

    return add if fn is None else add(fn)


def list_criteria() -> list[str]:
    """Registered criterion names, sorted."""
    return sorted(_CRITERIA)


def get_criterion(name: str) -> Criterion:
    """The criterion called ``name``."""
    try:
        return _CRITERIA[name]
    except KeyError:
        raise ValueError(f"unknown criterion {name!r}; known: {', '.join(list_criteria())}") from None


def producers(spec: NetSpec, group: int) -> list[str]:
    """Layers that create a group's channels: its members except depthwise convs (which only pass them on)."""
    return [x.name for x in spec.layers if x.group == group and x.kind != "depthwise"]


def filter_scores(model: nn.Module, spec: NetSpec, per_filter: Callable[[Tensor], Tensor]) -> dict[int, Tensor]:
    """Sum over a group's producer convs of ``per_filter(weight) -> (out_ch,)`` (coupled layers added)."""
    scores = {}
    for g in spec.groups:
        total = torch.zeros(g.channels, dtype=torch.float64)
        for name in producers(spec, g.id):
            total += per_filter(model.get_submodule(name).weight.detach()).to(torch.float64).cpu()
        scores[g.id] = total
    return scores


@register_criterion("l1")
def l1(model: nn.Module, spec: NetSpec, batches=None, generator=None) -> dict[int, Tensor]:
    """L1 norm of each filter, sum_{c,kh,kw} |W[o, c, kh, kw]|, summed over coupled layers."""
    return filter_scores(model, spec, lambda w: w.abs().flatten(1).sum(1))


@register_criterion("l2")
def l2(model: nn.Module, spec: NetSpec, batches=None, generator=None) -> dict[int, Tensor]:
    """L2 norm of each filter, sqrt(sum W[o]^2), summed over coupled layers."""
    return filter_scores(model, spec, lambda w: w.flatten(1).norm(dim=1))


@register_criterion("random")
def random_scores(model: nn.Module, spec: NetSpec, batches=None, generator=None) -> dict[int, Tensor]:
    """Uniform random scores (the neutral order), drawn from ``generator``."""
    return {g.id: torch.rand(g.channels, generator=generator, dtype=torch.float64) for g in spec.groups}


_MAX_IMAGES = 256  # images per masked pass of kl
_MAX_ELEMENTS = 1 << 24  # elements of one chunk of per-channel contributions in es


def _images(batches: Iterable) -> list[Tensor]:
    """The image tensors of ``batches`` ((images, labels) pairs or bare image tensors)."""
    images = [b[0] if isinstance(b, (tuple, list)) else b for b in batches]
    if not images:
        raise ValueError("batches is empty: data-driven criteria need at least one batch of images")
    return images


def _output_names(model: nn.Module, spec: NetSpec) -> dict[int, list[str]]:
    """Per group, the modules whose outputs carry its channels' final values: each member's BatchNorm, else the member."""
    norms = trace(model, spec.resolution).norms
    return {g.id: [norms.get(m, m) for m in g.members] for g in spec.groups}


def _gate_gradient(module: nn.Module, grads: dict[int, Tensor]) -> Tensor:
    """dL/dz_c of a gate z = 1 scaling the module's output channels: sum(W[c] * dL/dW[c]) + b_c * dL/db_c."""
    w = module.weight
    total = (w * grads[id(w)]).reshape(w.shape[0], -1).sum(1)
    if module.bias is not None:
        total = total + module.bias * grads[id(module.bias)]
    return total


@register_criterion("taylor", needs_data=True)
def taylor(model: nn.Module, spec: NetSpec, batches=None, generator=None) -> dict[int, Tensor]:
    """Taylor (TE, Molchanov et al. 2019): s_c = sum over batches of (dL/dz_c)^2, z_c = 1 a gate on channel c.

    The gate sits after each member's BatchNorm, where dL/dz_c = gamma_c dL/dgamma_c +
    beta_c dL/dbeta_c (after the conv itself when no BatchNorm follows: sum W[c] dL/dW[c] +
    b_c dL/db_c).  The members of a coupling group share one gate, so their dL/dz_c add up
    before squaring.  L is the mean cross-entropy of a batch, the model in eval mode.
    """
    outputs = {g: [model.get_submodule(n) for n in names] for g, names in _output_names(model, spec).items()}
    params = list({id(p): p for mods in outputs.values() for m in mods
                   for p in (m.weight, m.bias) if p is not None}.values())
    scores = {g.id: torch.zeros(g.channels, dtype=torch.float64) for g in spec.groups}
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError("criterion 'taylor' needs labelled batches: [(images, labels), ...]")
            images, labels = batch
            loss = F.cross_entropy(model(images), labels)
            grads = {id(p): g for p, g in zip(params, torch.autograd.grad(loss, params))}
            with torch.no_grad():
                for g, mods in outputs.items():
                    scores[g] += sum(_gate_gradient(m, grads) for m in mods).double().cpu() ** 2
    finally:
        model.train(was_training)
    return scores


def _sensitivity(module: nn.Module, inputs: Tensor) -> Tensor:
    """Per input channel c of ``module``: max over samples, outputs o, positions p of the share of c in |W| * |a|."""
    a = inputs.detach().abs()
    w = module.weight.detach().abs()
    if isinstance(module, nn.Linear):
        share = a[:, :, None] * w.T[None] / (a @ w.T)[:, None, :].clamp_min(1e-30)  # (N, C, O)
        return share.amax(dim=(0, 2))

    def conv(x: Tensor, k: Tensor, groups: int = 1) -> Tensor:
        return F.conv2d(x, k, None, module.stride, module.padding, module.dilation, groups)

    total = conv(a, w)  # (N, O, H, W): sum over c of the contributions
    n, o = total.shape[:2]
    c_in = a.shape[1]
    step = max(1, _MAX_ELEMENTS // total[0].numel())
    best = torch.zeros(c_in, device=a.device)
    for s in range(n):
        for c0 in range(0, c_in, step):
            c1 = min(c_in, c0 + step)
            k = w[:, c0:c1].transpose(0, 1).reshape((c1 - c0) * o, 1, *w.shape[2:])
            part = conv(a[s:s + 1, c0:c1], k, groups=c1 - c0).view(c1 - c0, o, -1)
            share = part / total[s].view(1, o, -1).clamp_min(1e-30)
            best[c0:c1] = torch.maximum(best[c0:c1], share.flatten(1).amax(1))
    return best


@register_criterion("es", needs_data=True)
@torch.no_grad()
def es(model: nn.Module, spec: NetSpec, batches=None, generator=None) -> dict[int, Tensor]:
    """Empirical sensitivity (ES, Liebenwein et al. 2020): the largest relative contribution of a channel.

    For a layer reading the group's activation a (a_c: channel c) with weights W,
    s_c = max over images x, outputs o, positions p of (|W[o,c]| * |a_c(x)|)_p / sum_c' (|W[o,c']| * |a_c'(x)|)_p,
    * the layer's convolution (a product for the fc).  Every non-depthwise layer reading the
    group counts (a depthwise conv reads one channel per output); skip-connected groups take
    the maximum over all those layers.
    """
    images = _images(batches)
    scores = {g.id: torch.zeros(g.channels, dtype=torch.float64) for g in spec.groups}

    def hook(parts: tuple[tuple[int, int], ...]):
        def record(module, inputs):
            sens, offset = _sensitivity(module, inputs[0]).double().cpu(), 0
            for group, full in parts:  # a concatenated input: each part's channels at its offset
                if group >= 0:
                    scores[group] = torch.maximum(scores[group], sens[offset:offset + full])
                offset += full
        return record

    handles = [model.get_submodule(x.name).register_forward_pre_hook(hook(x.input_parts))
               for x in spec.layers if x.groups == 1 and any(g >= 0 for g, _ in x.input_parts)]
    was_training = model.training
    model.eval()
    try:
        for x in images:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return scores


class _Replay:
    """A model's fx graph that keeps every node's value, then re-runs only what a channel mask changes."""

    def __init__(self, model: nn.Module) -> None:
        self.graph = fx.symbolic_trace(model)
        self.modules = dict(self.graph.named_modules())
        self.values: dict[fx.Node, object] = {}

    def _call(self, node: fx.Node, args, kwargs):
        if node.op == "call_module":
            return self.modules[node.target](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        return getattr(args[0], node.target)(*args[1:], **kwargs)

    def _walk(self, get, fresh: dict, masks: dict[str, Tensor] | None):
        for node in self.graph.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                return fx.node.map_arg(node.args[0], get)
            hit = masks is not None and node.op == "call_module" and node.target in masks
            if masks is not None and not hit and not any(a in fresh for a in node.all_input_nodes):
                continue
            if node.op == "get_attr":
                out = self.graph.get_parameter(node.target)
            else:
                args, kwargs = fx.node.map_arg((node.args, node.kwargs), get)
                out = self._call(node, args, kwargs)
            if hit:
                mask = masks[node.target]
                out = out * mask.view(*mask.shape, *([1] * (out.dim() - 2)))
            fresh[node] = out
        raise ValueError("the traced graph has no output")

    def run(self, x: Tensor) -> Tensor:
        """Forward pass of ``x`` (N images), keeping every node's value."""
        placeholder = next(n for n in self.graph.graph.nodes if n.op == "placeholder")
        self.values = {placeholder: x}
        return self._walk(self.values.__getitem__, self.values, None)

    def masked(self, masks: dict[str, Tensor], repeat: int) -> Tensor:
        """Output of the last ``run`` with module outputs scaled by ``masks`` ((repeat * N, C) rows, mask-major).

        Only nodes downstream of a masked module are recomputed; kept values are tiled ``repeat`` times.
        """
        fresh: dict[fx.Node, object] = {}

        def get(node: fx.Node):
            if node in fresh:
                return fresh[node]
            value = self.values[node]
            if node.op == "get_attr" or not isinstance(value, Tensor):
                return value
            return value.repeat(repeat, *([1] * (value.dim() - 1)))

        return self._walk(get, fresh, masks)


@register_criterion("kl", needs_data=True)
@torch.no_grad()
def kl(model: nn.Module, spec: NetSpec, batches=None, generator=None) -> dict[int, Tensor]:
    """KL importance (Luo & Wu 2020): s_c = mean over images x of KL(p(x) || p_-c(x)).

    p is the network's softmax output, p_-c the output with channel c masked: zeroed after
    each member's BatchNorm (after the conv when none follows).  A coupling group has one mask
    shared by all its members, so a residual channel vanishes from every layer at once.
    Cost: per channel, one pass of the layers downstream of the group (fx replay of the rest).
    """
    images = _images(batches)
    targets = _output_names(model, spec)
    scores = {g.id: torch.zeros(g.channels, dtype=torch.float64) for g in spec.groups}
    was_training = model.training
    inplace = [m for m in model.modules() if getattr(m, "inplace", False)]
    model.eval()
    for m in inplace:  # cached values must not be overwritten by in-place activations
        m.inplace = False
    count = 0
    try:
        replay = _Replay(model)
        for x in images:
            n = x.shape[0]
            logp = F.log_softmax(replay.run(x).double(), 1)
            per = max(1, _MAX_IMAGES // n)
            for g in spec.groups:
                for c0 in range(0, g.channels, per):
                    chans = torch.arange(c0, min(g.channels, c0 + per))
                    k = len(chans)
                    mask = torch.ones(k, g.channels, dtype=x.dtype, device=x.device)
                    mask[torch.arange(k), chans.to(x.device)] = 0
                    rows = mask.repeat_interleave(n, 0)
                    logq = F.log_softmax(replay.masked({t: rows for t in targets[g.id]}, k).double(), 1)
                    div = (logp.exp().repeat(k, 1) * (logp.repeat(k, 1) - logq)).sum(1).clamp_min(0.0)  # >= 0 up to rounding
                    scores[g.id][chans] += div.view(k, n).sum(1).cpu()
            count += n
    finally:
        for m in inplace:
            m.inplace = True
        model.train(was_training)
    return {g: s / count for g, s in scores.items()}


@register_criterion("gm")
def gm(model: nn.Module, spec: NetSpec, batches=None, generator=None) -> dict[int, Tensor]:
    """Geometric median (GM, He et al. 2019): s_o = sum_j ||W[o] - W[j]||_2 over the filters of a layer.

    Filters close to all others (near the layer's geometric median) are the most replaceable and
    rank lowest; coupled layers' scores are summed.
    """
    def distances(w: Tensor) -> Tensor:
        f = w.flatten(1).float()
        return torch.cdist(f, f, compute_mode="use_mm_for_euclid_dist").double().sum(1)

    return filter_scores(model, spec, distances)


def score_channels(model: nn.Module, spec: NetSpec, criterion: str = "l1", batches: Iterable | None = None,
                   generator: torch.Generator | None = None) -> dict[int, Tensor]:
    """Importance of every channel of every coupling group: {group id: Tensor(channels)}, higher = keep.

    ``batches``: iterable of (images, labels) for data-driven criteria; ``generator`` seeds random
    criteria (default: a generator seeded with 0).
    """
    crit = get_criterion(criterion)
    if crit.needs_data and batches is None:
        raise ValueError(f"criterion {criterion!r} needs calibration batches (batches=None given)")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    scores = crit.fn(model, spec, batches, generator)
    for g in spec.groups:
        if g.id not in scores or tuple(scores[g.id].shape) != (g.channels,):
            raise ValueError(f"criterion {criterion!r} returned no ({g.channels},) scores for group {g.id}")
    return scores
