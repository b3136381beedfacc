"""JointPruningProblem: a pymoo Problem scoring candidates by supernet val loss and predicted latency."""

from __future__ import annotations

from typing import Callable

import numpy as np
from pymoo.core.problem import Problem
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

Estimator = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class JointPruningProblem(Problem):
    """Objectives (val loss, latency ms); constraint latency <= budget when a budget is given.

    Args:
        space: the SearchSpace (genes, bounds, decode_arrays).
        predictor: a latency Predictor with ``predict(out_ch, in_ch, density) -> ms``.
        estimator: scores a whole set of candidates at once, ``genes (N, G) -> (loss, acc)``; the
            set passed to one call is exactly the set the supernet is rebuilt for.
        budget_ms: latency budget, or None for an unconstrained search.
        latency_space: the space whose decoding the predictor reads (default ``space``); differs
            only when the table prices the classifier at another number of classes.
    """

    def __init__(self, space, predictor, estimator: Estimator, budget_ms: float | None = None,
                 latency_space=None):
        self.space = space
        self.latency_space = latency_space if latency_space is not None else space
        self.predictor = predictor
        self.estimator = estimator
        self.budget_ms = budget_ms
        super().__init__(
            n_var=len(space.lower),
            n_obj=2,
            n_ieq_constr=0 if budget_ms is None else 1,
            xl=np.asarray(space.lower, dtype=float),
            xu=np.asarray(space.upper, dtype=float),
        )

    def latency(self, genes: np.ndarray) -> np.ndarray:
        """Predicted latency in ms of each row of genes."""
        out_ch, in_ch, density = self.latency_space.decode_arrays(np.atleast_2d(genes))
        return np.asarray(self.predictor.predict(out_ch, in_ch, density), dtype=float)

    def _evaluate(self, x, out, *args, **kwargs):
        latency = self.latency(x)
        loss, acc = self.estimator(x)
        out["F"] = np.column_stack([loss, latency])
        out["acc"] = np.asarray(acc, dtype=float)
        if self.budget_ms is not None:
            out["G"] = (latency - self.budget_ms)[:, None]


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Indices of the first non-dominated front of objective rows F (all minimised)."""
    F = np.asarray(F, dtype=float).reshape(-1, 2)
    if len(F) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(NonDominatedSorting().do(F, only_non_dominated_front=True), dtype=np.int64)


def hypervolume(F: np.ndarray, reference: tuple[float, float]) -> float:
    """pymoo hypervolume of (loss, latency) rows, each objective divided by its reference value.

    The reference point is (1, 1) after that scaling: loss = ln(classes) (chance), latency = the
    budget (or the unpruned latency without one); points beyond it add nothing.
    """
    F = np.asarray(F, dtype=float).reshape(-1, 2) / np.asarray(reference, dtype=float)
    F = F[(F < 1.0).all(axis=1)]
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=np.ones(2)).do(F))
