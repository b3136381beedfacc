"""Variation operators of the pruning search: SBX, polynomial mutation, grid repair, duplicate elimination."""

from __future__ import annotations

import numpy as np
from pymoo.core.duplicate import DefaultDuplicateElimination
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM

SBX_ETA = 0.5
SBX_PROB = 0.5
PM_ETA = 15.0


class GridRepair(Repair):
    """Snaps every gene to the search space's candidate grid and clips it to the gene's bounds."""

    def __init__(self, space):
        super().__init__()
        self.space = space

    def _do(self, problem, X, **kwargs):
        return self.space.snap(np.asarray(X, dtype=float))


class LatencySpreadSampling(Sampling):
    """Initial genomes spread from the smallest arch to the full one, preferring those within budget.

    Draws are ``SearchSpace.random`` (one level per genome plus per-gene noise). With a budget (``problem.budget_ms``), ``oversample`` times more genomes
    are drawn, their latency predicted (``problem.latency``), and the n kept are the feasible ones
    evenly spread over latency, topped up with the fastest infeasible ones.
    """

    def __init__(self, space, oversample: int = 16, noise: float = 0.15):
        super().__init__()
        self.space, self.oversample, self.noise = space, oversample, noise

    def _do(self, problem, n_samples, random_state=None, **kwargs):
        budget = getattr(problem, "budget_ms", None)
        n_draw = n_samples * (self.oversample if budget is not None else 1)
        X = self.space.random(n_draw, random_state, self.noise)
        if budget is None:
            return X
        X = np.unique(X, axis=0)
        latency = problem.latency(X)
        order = np.argsort(latency, kind="stable")
        feasible = order[latency[order] <= budget]
        if len(feasible) >= n_samples:
            pick = feasible[np.unique(np.linspace(0, len(feasible) - 1, n_samples).round().astype(int))]
        else:
            pick = order[:n_samples]
        return X[pick]


def crossover() -> SBX:
    """Simulated binary crossover, eta 0.5, applied to a mating with probability 0.5."""
    return SBX(eta=SBX_ETA, prob=SBX_PROB)


def mutation(n_genes: int) -> PM:
    """Polynomial mutation, eta 15, each gene mutated with probability 1 / n_genes."""
    return PM(eta=PM_ETA, prob=1.0, prob_var=1.0 / n_genes)


def duplicate_elimination() -> DefaultDuplicateElimination:
    """Drops offspring whose (snapped) genes equal another individual's."""
    return DefaultDuplicateElimination(epsilon=1e-9)
