"""JCW step 2: dense training of a picked arch, ADMM toward its 4x1-block pattern, masked fine-tuning."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from jcw.train.admm import BlockADMM, apply_masks, energy_outside, pattern_masks, weight_layers
from jcw.train.distributed import DistContext, init_distributed
from jcw.train.loops import atomic_torch_save, evaluate, gather, in_memory, ordered_batches, sgd
from jcw.core.errors import UsageError

STAGES = ("dense", "admm", "finetune")
CHECKPOINT = "last.pt"
MODEL = "model.pt"
CHECKPOINT_FORMAT = "jcw.train-checkpoint/1"
MODEL_FORMAT = "jcw.trained-model/1"
EPOCH_STRIDE = 100_000  # data order of epoch e of stage s: the sampler's epoch s * EPOCH_STRIDE + e
CALIBRATION_SAMPLES = 2048  # training samples that re-estimate BatchNorm statistics once the mask is applied


@dataclass
class TrainConfig:
    """Everything one ``python -m jcw.train`` run needs."""

    result: Path | None = None
    pick: str | None = None
    arch: Path | None = None
    model: str | None = None  # a model reference; default: the one the arch's file records
    data: str = "digits"
    weights: Path | None = None
    from_scratch: bool = False
    epochs_dense: int = 10
    epochs_admm: int = 10
    epochs_finetune: int = 10
    rho: float = 0.01
    lr: float = 0.05
    batch_size: int = 64
    train_on: str = "cpu"
    out: Path = Path("runs/train")
    resume: bool = False
    seed: int = 0
    quiet: bool = False

    def epochs(self, stage: str) -> int:
        return {"dense": self.epochs_dense, "admm": self.epochs_admm, "finetune": self.epochs_finetune}[stage]


@dataclass
class TrainResult:
    """What a run produced: accuracies per stage, energy outside the mask after ADMM, the saved model."""

    accuracy: dict[str, float]
    energy_outside: float
    densities: dict[str, float]
    history: list[dict] = field(default_factory=list)
    model_path: Path | None = None


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{what} {path}: not valid JSON ({e})") from None


def _arch_from(obj: dict, where: str):
    from jcw.core.space import Arch

    data = obj.get("arch", obj)
    try:
        return Arch.from_dict(data)
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{where}: not an arch (expected the JSON of jcw.space.Arch): {e}") from None


def select_arch(config: TrainConfig) -> tuple:
    """(Arch, train resolution or None): ``--arch FILE``, or the most accurate ``--result`` candidate within ``--pick``.

    The train resolution is the one the search trained at (``train_resolution`` in its JSON), None when
    the file does not say (the dataset's own resolution is used then).
    """
    arch, train_resolution, _ = _select(config)
    return arch, train_resolution


def _select(config: TrainConfig) -> tuple:
    """(Arch, train resolution or None, the JSON it came from): see ``select_arch``.

    ``--pick best``: the most accurate candidate within the budget the search recorded (all candidates
    when it recorded none); ``--pick LATENCY``: the most accurate candidate within LATENCY.
    """
    if (config.arch is None) == (config.result is None):
        raise UsageError("give exactly one of --arch ARCH.json or --result RUN_DIR/front.json --pick LATENCY|best")
    if config.arch is not None:
        if config.pick is not None:
            raise UsageError("--pick goes with --result, not with --arch")
        obj = _read_json(config.arch, "--arch")
        return _arch_from(obj, str(config.arch)), obj.get("train_resolution"), obj
    if config.pick is None:
        raise UsageError("--result needs --pick LATENCY|best (e.g. --pick 35ms)")
    from jcw.core.util import parse_budget

    front = _read_json(config.result, "--result")
    if config.pick.strip().lower() == "best":
        budget = front.get("budget_ms")
        budget = float("inf") if budget is None else float(budget)
    else:
        try:
            budget = parse_budget(config.pick)
        except UsageError as e:
            raise UsageError(f"--pick: {e}; or --pick best (the most accurate candidate within the search's "
                             "budget)") from None
    candidates = front.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise UsageError(f"--result {config.result}: no 'candidates' list (is it a search's front.json?)")
    try:
        latency = [float(c["latency_ms"]) for c in candidates]
        accuracy = [float(c["val_acc"]) for c in candidates]
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"--result {config.result}: every candidate needs numeric latency_ms and val_acc") from None
    within = [i for i, t in enumerate(latency) if t <= budget]
    if not within:
        fastest = min(latency)
        raise UsageError(f"--pick {config.pick}: no candidate within {budget:g} ms; the fastest takes {fastest:.2f} ms")
    best = max(within, key=lambda i: (accuracy[i], -latency[i]))
    return _arch_from(candidates[best], f"{config.result} candidate {best}"), front.get("train_resolution"), front


def model_for(arch, recorded: dict, given: str | None, where) -> str:
    """The reference of the model to rebuild ``arch`` from: ``given`` (``--model``), else the one ``recorded``
    (front.json / best.json / a checkpoint record: ``model_ref``; a record from before references: the zoo
    name of the arch).  A ``given`` reference other than the recorded one wins, with a warning on stderr."""
    from jcw.models import canonical_reference, list_models

    known = recorded.get("model_ref") or (arch.model if arch.model in list_models() else None)
    if given is None:
        if known is None:
            raise UsageError(f"{where} does not record how to rebuild model {arch.model!r} (searched from Python "
                             "with a model instance); pass --model path/to/file.py:factory or package.module:factory")
        return known
    given = canonical_reference(given)
    if known is not None and given != known:
        print(f"warning: --model {given} is not the model {where} records ({known}); using {given}",
              file=sys.stderr)
    return given


def build_model(arch, num_classes: int, weights: Path | None, seed: int, model: str | None = None) -> nn.Module:
    """The dense channel-pruned model of ``arch``: channels ordered by L1 importance, the first k kept.

    ``model``: the reference to build the full model from (``jcw.models.load_model``; default: the arch's
    zoo model).  Unlike ``materialize`` no 4x1 masks are applied: the dense stage trains all kept weights.
    """
    from jcw.train.checkpoint import load_weights
    from jcw.layers import describe
    from jcw.prune.materialize import order_channels, slice_model
    from jcw.models import load_model

    full = load_model(model or arch.model, num_classes=num_classes, seed=seed)
    spec = describe(full, arch.resolution, name=arch.model)
    if weights is not None:
        load_weights(full, weights, classifier=spec.layers[-1].name)  # UsageError (a ValueError): train() -> UsageError
    order_channels(full, spec, "l1")
    return slice_model(full, spec, arch)


def rebuild_model(arch, num_classes: int, model: str | None = None) -> nn.Module:
    """An uninitialised module with the layer shapes of ``arch`` (to load a trained state dict into);
    ``model``: the reference of its full model (default: the arch's zoo model)."""
    from jcw.layers import describe
    from jcw.prune.materialize import slice_model
    from jcw.models import load_model

    full = load_model(model or arch.model, num_classes=num_classes)
    return slice_model(full, describe(full, arch.resolution, name=arch.model), arch)


def load_trained(path: Path, model: str | None = None) -> tuple[nn.Module, dict]:
    """A saved model (``model.pt``) -> (eval-mode module with its masks applied, its record).

    ``model``: a reference to rebuild it from instead of the one the record holds (``model_ref``); the
    returned record's ``model_ref`` is the reference used.
    """
    from jcw.core.space import Arch

    from jcw.train.checkpoint import read_torch

    record = read_torch(path, UsageError, "not a trained model written by jcw.train")
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise UsageError(f"{path}: not a trained model written by jcw.train (expected format {MODEL_FORMAT})")
    try:
        arch = Arch.from_dict(record["arch"])
    except (KeyError, ValueError) as e:
        raise UsageError(f"{path}: a damaged trained model ({e})") from None
    ref = model_for(arch, record, model, path)
    try:
        module = rebuild_model(arch, record["num_classes"], ref)
        module.load_state_dict(record["state_dict"])
        apply_masks(weight_layers(module, record["masks"]), record["masks"])
    except UsageError as e:
        raise UsageError(f"{path}: {e}") from None
    except (KeyError, ValueError, RuntimeError) as e:
        raise UsageError(f"{path}: a damaged trained model, or one --model does not fit ({e})") from None
    return module.eval(), {**record, "model_ref": ref}


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return _cpu(module.state_dict())


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in tensors.items()}


class StagedTrainer:
    """Runs dense -> ADMM -> masked fine-tuning on one process or as one rank of a DDP group."""

    def __init__(self, model: nn.Module, densities: dict[str, float], train_set: Dataset, val_set: Dataset,
                 config: TrainConfig, ctx: DistContext | None = None, out: Path | None = None,
                 record: dict | None = None):
        self.ctx = ctx or DistContext()
        if config.batch_size % self.ctx.world_size:
            raise UsageError(f"--batch-size {config.batch_size} must be a multiple of the "
                             f"{self.ctx.world_size} processes")
        self.config = config
        self.module = model.to(self.ctx.device)
        self.model = self.ctx.wrap(self.module)
        self.densities = {n: float(d) for n, d in densities.items() if d < 1.0}
        self.params = weight_layers(self.module, self.densities)
        self.train_set = train_set
        self.sampler = self.ctx.train_sampler(train_set, seed=config.seed)
        self.rank_batch = config.batch_size // self.ctx.world_size
        self.steps_per_epoch = -(-len(self.sampler) // self.rank_batch)
        self.val_batches = ordered_batches(Subset(val_set, self.ctx.shard(len(val_set))), 256, device=self.ctx.device)
        self.out = out
        self.record = record or {}
        self.masks: dict[str, torch.Tensor] = {}
        self.admm: BlockADMM | None = None
        self.accuracy: dict[str, float] = {}
        self.energy = 0.0
        self.history: list[dict] = []
        self.best_acc = -1.0
        self.best_state: dict[str, torch.Tensor] | None = None

    # -- one epoch ---------------------------------------------------------------------------

    def _train_epoch(self, stage: str, epoch: int, optimizer, scheduler) -> float:
        """One pass over this rank's shard; ADMM penalty after backward, masks re-applied after each step.

        Returns the mean training loss over all ranks.
        """
        self.model.train()
        self.sampler.set_epoch(STAGES.index(stage) * EPOCH_STRIDE + epoch)
        order = torch.tensor(list(self.sampler))
        total, count = 0.0, 0
        bar = tqdm(range(self.steps_per_epoch), desc=f"{stage} {epoch + 1}/{self.config.epochs(stage)}",
                   leave=False, disable=self.config.quiet or not self.ctx.is_main)
        for step in bar:
            x, y = gather(self.train_set, order[step * self.rank_batch:(step + 1) * self.rank_batch], self.ctx.device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(x), y)
            loss.backward()
            if self.admm is not None:
                self.admm.add_penalty_grad()
            optimizer.step()
            scheduler.step()
            if self.masks:
                apply_masks(self.params, self.masks)
            total += float(loss.detach()) * len(y)
            count += len(y)
            bar.set_postfix(loss=f"{total / count:.3f}")
        total, count = self.ctx.all_reduce_sum(torch.tensor([total, count], dtype=torch.float64)).tolist()
        return total / max(count, 1)

    def evaluate(self) -> tuple[float, float]:
        """(mean loss, accuracy) on the whole validation set, summed over all ranks' shards."""
        n = sum(len(y) for _, y in self.val_batches)
        loss, acc = evaluate(self.module, self.val_batches) if n else (0.0, 0.0)
        loss_sum, correct, total = self.ctx.all_reduce_sum(torch.tensor([loss * n, acc * n, n],
                                                                        dtype=torch.float64)).tolist()
        return loss_sum / total, correct / total

    # -- stages ------------------------------------------------------------------------------

    def _optimizer(self, stage: str):
        optimizer = sgd(self.model.parameters(), self.config.lr)
        steps = max(1, self.config.epochs(stage) * self.steps_per_epoch)
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)

    def _end(self, stage: str) -> None:
        if stage == "dense":
            if self.best_state is not None:
                self.module.load_state_dict(self.best_state)
            self.accuracy["dense"] = self.evaluate()[1]
            self.best_acc, self.best_state = -1.0, None
        elif stage == "admm":
            self.masks = self._target_masks()
            self.admm = None
            self.energy = energy_outside(self.params, self.masks)
            apply_masks(self.params, self.masks)
            self._recalibrate_norms()
            self.accuracy["pruned"] = self.evaluate()[1]
            self.best_acc, self.best_state = self.accuracy["pruned"], _clone_state(self.module)
            self._save_model()
        else:
            self.module.load_state_dict(self.best_state)
            self.accuracy["finetuned"] = self.best_acc
            self._save_model()

    @torch.no_grad()
    def _recalibrate_norms(self) -> None:
        """Re-estimate BatchNorm running statistics (the mask changed every activation) on training samples.

        Up to CALIBRATION_SAMPLES samples in all, split over the ranks; the ranks' estimates are averaged.
        """
        norms = [m for m in self.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [bn.momentum for bn in norms]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        self.module.train()
        self.sampler.set_epoch(len(STAGES) * EPOCH_STRIDE)  # an order no training epoch uses
        order = torch.tensor(list(self.sampler))[:CALIBRATION_SAMPLES // self.ctx.world_size]
        for start in range(0, len(order), self.rank_batch):
            self.module(gather(self.train_set, order[start:start + self.rank_batch], self.ctx.device)[0])
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
            if self.ctx.distributed:
                for stat in (bn.running_mean, bn.running_var):
                    stat.copy_(self.ctx.all_reduce_sum(stat.detach().clone()) / self.ctx.world_size)

    def _target_masks(self) -> dict[str, torch.Tensor]:
        """The fixed masks once set, else the 4x1-block masks of the current weights at the target densities."""
        if self.masks:
            return self.masks
        return pattern_masks(self.params, self.densities)

    def run(self, resume: bool = False) -> TrainResult:
        """Train all stages (continuing from ``out/last.pt`` when ``resume``); returns the result."""
        start_stage, start_epoch = 0, 0
        state = self._load_checkpoint() if resume else None
        if state is not None:
            start_stage, start_epoch = STAGES.index(state["stage"]), state["epoch"]
            self._restore(state)
        for si in range(start_stage, len(STAGES)):
            stage = STAGES[si]
            if stage == "admm" and self.densities:
                self.admm = BlockADMM(self.params, self.densities, rho=self.config.rho)
            optimizer, scheduler = self._optimizer(stage)
            first = 0
            if state is not None and si == start_stage:
                first = start_epoch
                self._restore_optimizer(state, optimizer, scheduler)
            for epoch in range(first, self.config.epochs(stage)):
                train_loss = self._train_epoch(stage, epoch, optimizer, scheduler)
                val_loss, val_acc = self.evaluate()
                if self.admm is not None:
                    self.admm.update()
                entry = {"stage": stage, "epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                         "val_acc": val_acc, "energy_outside": energy_outside(self.params, self._target_masks())}
                self.history.append(entry)
                if stage != "admm" and val_acc > self.best_acc:
                    self.best_acc, self.best_state = val_acc, _clone_state(self.module)
                    if stage == "finetune":
                        self._save_model()
                self._log(entry)
                self._save_checkpoint(stage, epoch + 1, optimizer, scheduler)
            self._end(stage)
            if si + 1 < len(STAGES):
                self._save_checkpoint(STAGES[si + 1], 0, None, None)
        return TrainResult(accuracy=dict(self.accuracy), energy_outside=self.energy,
                           densities=self._mask_densities(), history=list(self.history),
                           model_path=self.out / MODEL if self.out is not None else None)

    def _mask_densities(self) -> dict[str, float]:
        return {n: float(m.float().mean()) for n, m in self.masks.items()}

    # -- files -------------------------------------------------------------------------------

    def _log(self, entry: dict) -> None:
        if self.ctx.is_main and not self.config.quiet:
            extra = f"  energy outside mask {entry['energy_outside']:.4f}" if "energy_outside" in entry else ""
            print(f"{entry['stage']:>8} {entry['epoch']:3d}  train loss {entry['train_loss']:.4f}  "
                  f"val loss {entry['val_loss']:.4f}  val acc {entry['val_acc']:.4f}{extra}", flush=True)

    def _save_checkpoint(self, stage: str, epoch: int, optimizer, scheduler) -> None:
        if self.out is not None and self.ctx.is_main:
            atomic_torch_save({
                "format": CHECKPOINT_FORMAT, "record": self.record, "stage": stage, "epoch": epoch,
                "model": _clone_state(self.module),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "admm": self.admm.state_dict() if self.admm is not None else None,
                "masks": _cpu(self.masks), "accuracy": self.accuracy, "energy_outside": self.energy,
                "history": self.history, "best_acc": self.best_acc, "best_state": self.best_state,
            }, self.out / CHECKPOINT)
        self.ctx.barrier()

    def _load_checkpoint(self) -> dict | None:
        path = self.out / CHECKPOINT if self.out is not None else None
        if path is None or not path.exists():
            raise UsageError(f"--resume: no checkpoint {path} to continue from")
        from jcw.train.checkpoint import read_torch

        state = read_torch(path, UsageError, "not a readable jcw.train checkpoint", what="--resume: ")
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise UsageError(f"--resume: {path} is not a jcw.train checkpoint")
        if state["record"].get("arch") != self.record.get("arch"):
            raise UsageError(f"--resume: {path} trains another arch than the one given")
        return state

    def _restore(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.masks = {n: m.to(self.ctx.device) for n, m in state["masks"].items()}
        self.accuracy = dict(state["accuracy"])
        self.energy = state["energy_outside"]
        self.history = list(state["history"])
        self.best_acc, self.best_state = state["best_acc"], state["best_state"]

    def _restore_optimizer(self, state: dict, optimizer, scheduler) -> None:
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        if state["admm"] is not None:
            self.admm.load_state_dict(state["admm"])

    def _save_model(self) -> None:
        if self.out is None or not self.ctx.is_main:
            return
        atomic_torch_save({
            "format": MODEL_FORMAT, **self.record, "state_dict": self.best_state, "masks": _cpu(self.masks),
            "densities": self._mask_densities(), "accuracy": {**self.accuracy, "finetuned": self.best_acc},
            "energy_outside": self.energy, "history": self.history,
        }, self.out / MODEL)


def train(config: TrainConfig, ctx: DistContext | None = None) -> TrainResult:
    """Select the arch, load the data, materialize, and run all stages; rank 0 writes ``config.out``."""
    if (config.weights is None) == (not config.from_scratch):
        raise UsageError("give exactly one of --weights FILE (full-model weights) or --from-scratch")
    for stage in STAGES:
        if config.epochs(stage) < 0:
            raise UsageError(f"--epochs-{stage} must be >= 0, got {config.epochs(stage)}")
    if config.lr <= 0 or config.rho <= 0 or config.batch_size < 1:
        raise UsageError("--lr and --rho must be > 0 and --batch-size >= 1")
    arch, train_resolution, recorded = _select(config)
    where = config.arch or config.result
    model_ref = model_for(arch, recorded, config.model, where)
    from jcw.data import load_dataset

    try:
        data = load_dataset(config.data, resolution=train_resolution, seed=config.seed)
    except UsageError as e:
        raise UsageError(str(e)) from None
    try:
        model = build_model(arch, data.num_classes, config.weights, config.seed, model_ref)
    except ValueError as e:  # the arch does not fit the model (layers, channels, classes); a bad reference
        raise UsageError(f"{where}: {e}") from None
    densities = {layer.name: layer.density for layer in arch.layers}
    ctx = ctx or init_distributed(config.train_on)
    if ctx.is_main:
        config.out.mkdir(parents=True, exist_ok=True)
    record = {"arch": arch.to_dict(), "model_ref": model_ref, "num_classes": data.num_classes,
              "resolution": arch.resolution, "train_resolution": data.resolution, "data": data.name,
              "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}}
    trainer = StagedTrainer(model, densities, in_memory(data.train), in_memory(data.val), config, ctx=ctx,
                            out=config.out, record=record)
    return trainer.run(resume=config.resume)
