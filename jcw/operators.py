"""Variation operators of the pruning search: SBX, polynomial mutation, grid repair, duplicate elimination."""

from __future__ import annotations

import numpy as np
from pymoo.core.duplicate import DefaultDuplicateElimination
from pymoo.core.repair import Repair
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


def crossover() -> SBX:
    """Simulated binary crossover, eta 0.5, applied to a mating with probability 0.5."""
    return SBX(eta=SBX_ETA, prob=SBX_PROB)


def mutation(n_genes: int) -> PM:
    """Polynomial mutation, eta 15, each gene mutated with probability 1 / n_genes."""
    return PM(eta=PM_ETA, prob=1.0, prob_var=1.0 / n_genes)


def duplicate_elimination() -> DefaultDuplicateElimination:
    """Drops offspring whose (snapped) genes equal another individual's."""
    return DefaultDuplicateElimination(epsilon=1e-9)
