"""Weight-sharing supernet: prefix channel slicing, dynamic 4x1 block masks, per-candidate BatchNorm."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from jcw.train.distributed import DistContext
from jcw.prune.materialize import block_mask, input_index
from jcw.train.loops import Batch, evaluation_sums, sgd


@dataclass
class _Active:
    """The candidate set the dynamic modules read: per candidate and spec layer (out_ch, density),
    and the processes a batch is split over (``dist``)."""

    out_ch: np.ndarray | None = None
    density: np.ndarray | None = None
    index: int | None = None
    calibrating: bool = False
    masks: dict = field(default_factory=dict)
    owner: dict = field(default_factory=dict)  # coupling group -> index of a spec layer producing it
    dist: DistContext = field(default_factory=DistContext)

    def mask(self, layer: int, weight: Tensor, density: float) -> Tensor:
        """The 4x1 block mask of the active candidate's sliced weight; cached while no gradient is taken
        (the weights cannot change then), recomputed every training step."""
        if torch.is_grad_enabled():
            self.masks.clear()
            return block_mask(weight.detach(), density)
        key = (self.index, layer)
        if key not in self.masks:
            self.masks[key] = block_mask(weight.detach(), density)
        return self.masks[key]

    def choice(self, layer: int) -> tuple[int | None, float]:
        if self.index is None:
            return None, 1.0
        return int(self.out_ch[self.index, layer]), float(self.density[self.index, layer])

    def columns(self, layer, device) -> Tensor:
        """Input channels a layer reading a concatenation uses (``materialize.input_index``): the active
        candidate's first kept channels of every part (``owner``: a spec layer producing each group)."""
        kept = {} if self.index is None else {
            g: int(self.out_ch[self.index, self.owner[g]]) for g, _ in layer.in_parts if g >= 0}
        return input_index(layer, {}, kept).to(device)


class DynamicConv2d(nn.Module):
    """A Conv2d whose active filters are a prefix of the full ones, its input the channels it gets.

    Depthwise convs follow their input width; others keep the active candidate's out_ch filters and
    zero all but the largest-L2 4x1 blocks (``block_mask``) when the density is below 1.  A conv
    reading a concatenation (``concat``: its LayerSpec, see ``_Active.columns``) uses the weight
    columns of the kept prefix of every part.
    """

    def __init__(self, conv: nn.Conv2d, layer: int, active: _Active, concat=None):
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
        self.groups = conv.groups  # a grouped conv is frozen: always whole, dense
        self.layer, self.active, self.concat = layer, active, concat

    def forward(self, x: Tensor) -> Tensor:
        out_ch, density = self.active.choice(self.layer)
        c_in = x.shape[1]
        if self.depthwise:
            weight, groups = self.weight[:c_in], c_in
        elif self.groups > 1:
            weight, groups = self.weight, self.groups
        elif self.concat is not None:
            weight, groups = self.weight[: out_ch or self.weight.shape[0]][:, self.active.columns(self.concat, x.device)], 1
        else:
            weight, groups = self.weight[: out_ch or self.weight.shape[0], :c_in], 1
        if density < 1.0:
            weight = weight * self.active.mask(self.layer, weight, density)
        bias = None if self.bias is None else self.bias[: weight.shape[0]]
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class DynamicLinear(nn.Module):
    """A Linear reading the active input width (or the kept columns of a concatenation, ``concat``)."""

    def __init__(self, linear: nn.Linear, layer: int, active: _Active, concat=None):
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.layer, self.active, self.concat = layer, active, concat

    def forward(self, x: Tensor) -> Tensor:
        out_ch, density = self.active.choice(self.layer)
        weight = self.weight[: out_ch or self.weight.shape[0]]
        weight = weight[:, self.active.columns(self.concat, x.device)] if self.concat is not None else weight[:, : x.shape[1]]
        if density < 1.0:
            weight = weight * self.active.mask(self.layer, weight, density)
        bias = None if self.bias is None else self.bias[: weight.shape[0]]
        return F.linear(x, weight, bias)


class DynamicBatchNorm2d(nn.Module):
    """BatchNorm with shared affine weights and one set of running statistics per candidate.

    With no active candidate it is the full model's BatchNorm (its own running statistics).
    Training uses batch statistics; calibration accumulates the active candidate's statistics as
    the cumulative average over the calibration batches; evaluation uses them. With several
    processes each holding a part of every batch, the batch statistics of training and calibration
    are those of the whole batch (``batch_moments``), so every process computes what one process
    would on the whole batch.
    """

    def __init__(self, bn: nn.BatchNorm2d, active: _Active):
        super().__init__()
        self.weight, self.bias, self.eps, self.momentum = bn.weight, bn.bias, bn.eps, bn.momentum
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)
        self.active = active
        self.cand_mean: Tensor | None = None
        self.cand_var: Tensor | None = None
        self.cand_count: Tensor | None = None

    def reset_candidates(self, n: int) -> None:
        """Allocates statistics for n candidates, initialised from the full model's."""
        self.cand_mean = self.running_mean.detach().clone().repeat(n, 1)
        self.cand_var = self.running_var.detach().clone().repeat(n, 1)
        self.cand_count = torch.zeros(n, dtype=torch.long)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        weight, bias = self.weight[:c], self.bias[:c]
        i = self.active.index
        if i is None:
            if self.training:
                return F.batch_norm(x, self.running_mean, self.running_var, weight, bias, True, self.momentum, self.eps)
            return F.batch_norm(x, self.running_mean, self.running_var, weight, bias, False, 0.0, self.eps)
        if self.active.dist.distributed and (self.training or self.active.calibrating):
            mean, var, count = batch_moments(x, self.active.dist)
            if self.active.calibrating:
                self._accumulate(i, mean, var * count / (count - 1) if count > 1 else var)
            shape = (1, c, 1, 1)
            return (x - mean.view(shape)) * (weight * torch.rsqrt(var + self.eps)).view(shape) + bias.view(shape)
        if self.active.calibrating:
            self._accumulate(i, x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=x.numel() // c > 1))
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        if self.training:
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        return F.batch_norm(x, self.cand_mean[i, :c], self.cand_var[i, :c], weight, bias, False, 0.0, self.eps)

    @torch.no_grad()
    def _accumulate(self, i: int, mean: Tensor, var: Tensor) -> None:
        """Folds one calibration batch's mean and (unbiased) variance into candidate i's cumulative averages."""
        c = len(mean)
        k = int(self.cand_count[i])
        self.cand_mean[i, :c] = (self.cand_mean[i, :c] * k + mean) / (k + 1) if k else mean
        self.cand_var[i, :c] = (self.cand_var[i, :c] * k + var) / (k + 1) if k else var
        self.cand_count[i] += 1


def batch_moments(x: Tensor, dist: DistContext) -> tuple[Tensor, Tensor, int]:
    """Per-channel mean and biased variance of the batch whose part on this process is ``x`` (N, C, H, W),
    and its number of values per channel.

    The processes' counts, sums and sums of squares (n * mean, n * squared mean) are summed in float64
    with one all-reduce that gradients flow through: mean = sum / n, var = sum of squares / n - mean^2.
    """
    c = x.shape[1]
    wide = x.double()
    local = torch.cat([wide.sum(dim=(0, 2, 3)), wide.square().sum(dim=(0, 2, 3)), wide.new_tensor([x.numel() // c])])
    total = dist.all_reduce_sum_with_grad(local)
    count = total[-1].detach()
    mean = total[:c] / count
    var = (total[c:2 * c] / count - mean.square()).clamp_min(0.0)
    return mean.to(x.dtype), var.to(x.dtype), int(count)


class Supernet(nn.Module):
    """One set of full-width weights (``net``, same state-dict keys as the model) for many candidates.

    The model must already be channel-ordered (``materialize.order_channels``) so that a prefix
    of every coupling group's channels is its most important part.

    Data-parallel over several processes (``dist``, e.g. under torchrun): every rank holds the same
    weights and trains the same candidates (rank 0 picks them and broadcasts), each on its part of
    the batch. BatchNorm normalises by the whole batch's statistics (``batch_moments``), gradients
    are averaged over the ranks by one all-reduce before each optimiser step
    (``DistContext.average_gradients``), and validation sums are all-reduced. Not DDP: a step runs
    forward and backward once per candidate, with a different sub-network each time, and DDP would
    all-reduce after every one of those backward passes; one all-reduce of the accumulated
    gradients gives the same update. Equal parts of the batch make the result that of one process
    on the whole batch, up to float rounding.
    """

    def __init__(self, model: nn.Module, spec, dist: DistContext | None = None):
        super().__init__()
        self.net = copy.deepcopy(model)
        self.active = _Active(dist=dist or DistContext())
        layer_index = {layer.name: i for i, layer in enumerate(spec.layers)}
        for i, layer in enumerate(spec.layers):
            self.active.owner.setdefault(layer.group, i)
        self._norms: list[DynamicBatchNorm2d] = []
        for name, module in list(self.net.named_modules()):
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if name not in layer_index:
                    raise ValueError(f"supernet: layer {name!r} of the model is not in its NetSpec")
                layer = spec.layers[layer_index[name]]
                cls = DynamicConv2d if isinstance(module, nn.Conv2d) else DynamicLinear
                replacement = cls(module, layer_index[name], self.active, layer if layer.in_parts else None)
            elif isinstance(module, nn.BatchNorm2d):
                replacement = DynamicBatchNorm2d(module, self.active)
                self._norms.append(replacement)
            else:
                continue
            parent_name, _, child = name.rpartition(".")
            setattr(self.net.get_submodule(parent_name) if parent_name else self.net, child, replacement)

    @property
    def dist(self) -> DistContext:
        return self.active.dist

    @property
    def n_candidates(self) -> int:
        return 0 if self.active.out_ch is None else len(self.active.out_ch)

    def set_candidates(self, out_ch: np.ndarray, density: np.ndarray) -> None:
        """Rebuilds the supernet for exactly these candidates (rows of decoded per-layer arrays)."""
        self.active.out_ch = np.asarray(out_ch, dtype=np.int64)
        self.active.density = np.asarray(density, dtype=float)
        self.active.index = None
        self.active.masks.clear()
        for bn in self._norms:
            bn.reset_candidates(len(self.active.out_ch))

    def select(self, index: int | None) -> None:
        """Makes candidate ``index`` active (None: the full model with its own BatchNorm statistics)."""
        self.active.index = index

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def train_steps(self, batches, steps: int, rule: "TrainingRule", optimizer: torch.optim.Optimizer,
                    progress=None) -> list[list[int]]:
        """Trains the shared weights ``steps`` steps; ``rule`` picks the candidates of each step.

        Every step draws one batch and accumulates the gradients of all the rule's candidates on it
        before one optimiser step. With ``rule.distill`` the first candidate (the largest) learns from
        the labels and every other one from its soft labels (in-place distillation). With several
        processes rank 0's rule picks and every rank trains those candidates.

        Args:
            batches: callable ``() -> (images, labels)`` giving the next training batch.
        Returns:
            the candidate indices trained at each step.
        """
        self.net.train()
        self.active.calibrating = False
        trained = []
        try:
            for _ in range(steps):
                chosen = self.dist.broadcast_object(rule.pick() if self.dist.is_main else None)
                self.train_step(batches(), chosen, rule.distill, optimizer)
                trained.append(chosen)
                if progress is not None:
                    progress.update(1)
        finally:
            self.select(None)
            self.active.masks.clear()
        return trained

    def train_step(self, batch: Batch, chosen: list[int], distill: bool, optimizer: torch.optim.Optimizer) -> Tensor:
        """One optimiser step over the candidates ``chosen`` on one batch; returns the first one's logits.

        With ``distill`` the candidates after the first are trained towards the first one's soft
        labels (``distillation_loss``, targets detached), else all towards the labels.
        """
        images, labels = batch
        optimizer.zero_grad(set_to_none=True)
        teacher = None
        for k, index in enumerate(chosen):
            self.select(index)
            logits = self.net(images)
            if k == 0 or not distill:
                loss = F.cross_entropy(logits, labels)
            else:
                loss = distillation_loss(logits, teacher)
            loss.backward()
            if k == 0:
                teacher = logits.detach()
        self.dist.average_gradients(self.parameters())
        if clip_gradients(self.parameters(), MAX_GRAD_NORM):
            optimizer.step()
        self.select(None)
        return teacher

    @torch.no_grad()
    def calibrate(self, index: int, batches: list[Batch]) -> None:
        """Recomputes candidate ``index``'s BatchNorm statistics on the given (cached) batches."""
        self.net.train()
        self.select(index)
        self.active.calibrating = True
        for bn in self._norms:
            bn.cand_count[index] = 0
        try:
            for images, _ in batches:
                self.net(images)
        finally:
            self.active.calibrating = False
            self.select(None)

    def measure(self, index: int | None, batches: list[Batch]) -> tuple[float, float]:
        """Mean cross-entropy loss and top-1 accuracy of candidate ``index`` on the given batches (with
        several processes: on all the ranks' batches together)."""
        self.select(index)
        try:
            sums = evaluation_sums(self.net, batches)
        finally:
            self.select(None)
        total, correct, count = self.dist.all_reduce_sum(torch.tensor(sums, dtype=torch.float64)).tolist()
        return total / count, correct / count


# Largest gradient norm of one supernet step.  A candidate whose block masks leave channels nearly
# constant gets BatchNorm (training mode) backward factors of up to 1 / sqrt(eps) per layer; through a
# few such layers one step's gradient reached 1e20 and the shared weights never recovered (NaN).
# Healthy steps of the default search run at a median norm of 11 (99th percentile 37).
MAX_GRAD_NORM = 50.0


def clip_gradients(params, max_norm: float) -> bool:
    """Scales the gradients of ``params`` down to total norm ``max_norm`` where it is larger; False (and
    the gradients dropped) where the norm is not finite, so the caller skips the step."""
    params = [p for p in params if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if torch.isfinite(norm):
        return True
    for p in params:
        p.grad = None
    return False


def distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """In-place distillation: mean over the batch of -sum_c softmax(teacher)_c * log_softmax(student)_c.

    The teacher's logits are detached: no gradient flows back into the network that produced them.
    """
    return torch.sum(-F.softmax(teacher.detach(), dim=1) * F.log_softmax(student, dim=1), dim=1).mean()


class TrainingRule:
    """Which members of the scored set a supernet training step trains (indices into the set).

    Args:
        macs: (N,) MACs of the scored set's members; the largest and smallest are found by them.
        generator: torch.Generator drawing the sampled members.
        sampled: members drawn per step besides the fixed ones.
    """

    distill = False

    def __init__(self, macs: np.ndarray, generator: torch.Generator, sampled: int = 2):
        macs = np.asarray(macs)
        self.n, self.generator, self.sampled = len(macs), generator, sampled
        self.largest, self.smallest = int(np.argmax(macs)), int(np.argmin(macs))

    def pick(self) -> list[int]:
        raise NotImplementedError


class OneCandidateRule(TrainingRule):
    """JCW's rule: one uniformly drawn member per step, trained on the labels."""

    def pick(self) -> list[int]:
        return [int(torch.randint(self.n, (1,), generator=self.generator))]


class SandwichRule(TrainingRule):
    """The sandwich rule: the largest member, the smallest and ``sampled`` others drawn without
    replacement, the narrower ones distilled from the largest's soft labels."""

    distill = True

    def pick(self) -> list[int]:
        fixed = [self.largest] if self.largest == self.smallest else [self.largest, self.smallest]
        rest = [i for i in range(self.n) if i not in fixed]
        order = torch.randperm(len(rest), generator=self.generator)[: self.sampled]
        return fixed + [rest[int(j)] for j in order]


RULES: dict[str, type[TrainingRule]] = {"jcw": OneCandidateRule, "sandwich": SandwichRule}


class SupernetEstimator:
    """Scores a set of candidates: rebuild the supernet for that set plus the reference models, train,
    calibrate, measure.

    The reference models (e.g. the unpruned and uniformly narrowed ones) join every scored set, so
    they are trained, calibrated and measured on the same terms as the candidates;
    ``reference_scores`` holds their (loss, accuracy) from the last call.

    Args:
        supernet: the Supernet (its shared weights persist from set to set).
        space: the SearchSpace decoding genes to per-layer channels and densities.
        train_batches: callable giving the next training batch (e.g. ``training.RandomBatches``).
        calib_batches: cached training batches for BatchNorm recalibration.
        val_batches: validation batches.
        steps: training steps per set; lr: their SGD learning rate.
        generator: torch.Generator drawing the candidates of each step.
        references: (R, G) genomes scored with every set (may be empty).
        rule: a name in ``RULES``; sampled: its members drawn per step besides the fixed ones.

    With several processes (the supernet's ``dist``) only rank 0 calls it (its strategy owns the
    candidates, and ``generator`` there draws every step's candidates and batch); each call
    broadcasts what to do and the genes to the other ranks, which wait in ``follow`` and run the
    same scoring on their parts of the batches, until rank 0's ``release``.
    """

    def __init__(self, supernet: Supernet, space, train_batches, calib_batches: list[Batch],
                 val_batches: list[Batch], steps: int, lr: float, generator: torch.Generator, quiet: bool = True,
                 references: np.ndarray | None = None, rule: str = "jcw", sampled: int = 2):
        if rule not in RULES:
            raise ValueError(f"unknown supernet rule {rule!r}; accepted: {', '.join(RULES)}")
        self.supernet, self.space = supernet, space
        self.train_batches, self.calib_batches, self.val_batches = train_batches, calib_batches, val_batches
        self.steps, self.lr, self.generator, self.quiet = steps, lr, generator, quiet
        self.references = np.zeros((0, space.n_genes)) if references is None else np.atleast_2d(references)
        self.rule, self.sampled = RULES[rule], sampled
        self.reference_scores = (np.zeros(0), np.zeros(0))
        self.trained: list[list[int]] = []

    def warm_up(self, steps: int) -> None:
        """Sandwich training over the whole space before the search (BigNAS-style): every step the
        unpruned model, the space's smallest arch and ``sampled`` fresh random archs
        (``SearchSpace.random``), the narrower ones distilled from the unpruned one."""
        if steps <= 0:
            return
        space = self.space
        rng = np.random.default_rng(int(torch.randint(2 ** 31 - 1, (1,), generator=self.generator)))
        ends = np.stack([space.full(), space.minimal()])
        self._on_all_ranks("warm_up", np.concatenate([np.concatenate([ends, space.random(self.sampled, rng)])
                                                      for _ in range(steps)]))

    def measure(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Val loss and accuracy of each row of genes with the current shared weights (no training)."""
        return self._on_all_ranks("measure", genes)

    def __call__(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Val loss and accuracy of each row of genes after training the supernet for them and the references."""
        return self._on_all_ranks("score", genes)

    def follow(self) -> None:
        """What ranks other than 0 do during a search: run each call that rank 0 broadcasts, until ``release``."""
        while True:
            command, genes = self.supernet.dist.broadcast_object(None)
            if command is None:
                return
            self._commands[command](self, genes)

    def release(self) -> None:
        """Rank 0, after its last call: ends the other ranks' ``follow``."""
        if self.supernet.dist.distributed and self.supernet.dist.is_main:
            self.supernet.dist.broadcast_object((None, None))

    def _on_all_ranks(self, command: str, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        genes = np.atleast_2d(genes)
        if self.supernet.dist.distributed:
            self.supernet.dist.broadcast_object((command, genes))
        return self._commands[command](self, genes)

    def _measure(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out_ch, _, density = self.space.decode_arrays(np.atleast_2d(genes))
        self.supernet.set_candidates(out_ch, density)
        scores = []
        for i in tqdm(range(len(out_ch)), desc="score", disable=self.quiet, leave=False):
            self.supernet.calibrate(i, self.calib_batches)
            scores.append(self.supernet.measure(i, self.val_batches))
        loss, acc = np.asarray(scores, dtype=float).reshape(-1, 2).T
        return loss, acc

    def _score(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scored = np.concatenate([genes, self.references])
        out_ch, _, density = self.space.decode_arrays(scored)
        self.supernet.set_candidates(out_ch, density)
        self.trained = []
        if self.steps > 0:
            rule = self.rule(self.space.macs(scored), self.generator, self.sampled)
            optimizer = sgd(self.supernet.parameters(), self.lr)
            with tqdm(total=self.steps, desc="supernet steps", disable=self.quiet, leave=False) as bar:
                self.trained = self.supernet.train_steps(self.train_batches, self.steps, rule, optimizer, bar)
        loss, acc = self._measure(scored)
        n = len(genes)
        self.reference_scores = (loss[n:], acc[n:])
        return loss[:n], acc[:n]

    def _warm_up(self, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_step = 2 + self.sampled
        optimizer = sgd(self.supernet.parameters(), self.lr)
        self.supernet.net.train()
        for start in tqdm(range(0, len(genes), per_step), desc="supernet warm-up", disable=self.quiet, leave=False):
            out_ch, _, density = self.space.decode_arrays(genes[start:start + per_step])
            self.supernet.set_candidates(out_ch, density)
            self.supernet.train_step(self.train_batches(), list(range(per_step)), True, optimizer)
        self.supernet.active.masks.clear()
        return np.zeros(0), np.zeros(0)

    _commands = {"measure": _measure, "score": _score, "warm_up": _warm_up}
