"""Uniform-target survival: round-robin over latency targets of per-target non-dominated fronts."""

from __future__ import annotations

import numpy as np
from pymoo.core.survival import Survival
from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

N_TARGETS = 4


def latency_targets(latency_min: float, latency_max: float, n_targets: int = N_TARGETS) -> np.ndarray:
    """Evenly spaced latency targets from the fastest arch to the unpruned model (or the budget)."""
    return np.linspace(float(latency_min), float(latency_max), n_targets)


def _target_order(F: np.ndarray, target: float) -> tuple[list[list[int]], np.ndarray]:
    """Fronts of (loss, |latency - target|), each sorted by descending latency crowding distance."""
    objectives = np.column_stack([F[:, 0], np.abs(F[:, 1] - target)])
    fronts = NonDominatedSorting().do(objectives)
    crowding = np.zeros(len(F))
    ordered = []
    for front in fronts:
        front = np.asarray(front)
        crowding[front] = calc_crowding_distance(F[front][:, [1]])
        ordered.append([int(i) for i in front[np.argsort(-crowding[front], kind="stable")]])
    return ordered, crowding


def select_uniform(F: np.ndarray, targets: np.ndarray, n_survive: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the survivors of objective rows F = (loss, latency), in selection order.

    Level by level (rank r = 0, 1, ...): the members of every target's r-th front that are not
    yet selected join if they all fit; otherwise the remaining slots are filled round-robin over
    the targets, each target offering its members by descending crowding distance on latency.
    Also returns per individual its best rank over targets and its largest crowding distance.
    """
    F = np.asarray(F, dtype=float)
    per_target = [_target_order(F, t) for t in targets]
    rank = np.full(len(F), np.iinfo(np.int64).max, dtype=np.int64)
    crowding = np.zeros(len(F))
    for fronts, cd in per_target:
        for r, front in enumerate(fronts):
            rank[front] = np.minimum(rank[front], r)
        crowding = np.maximum(crowding, cd)
    chosen: list[int] = []
    taken = np.zeros(len(F), dtype=bool)
    level = 0
    while len(chosen) < n_survive:
        queues = []
        for fronts, _ in per_target:
            members = fronts[level] if level < len(fronts) else []
            queues.append([i for i in members if not taken[i]])
        pool = list(dict.fromkeys(i for q in queues for i in q))
        if len(chosen) + len(pool) <= n_survive:
            for i in pool:
                taken[i] = True
                chosen.append(i)
        else:
            while len(chosen) < n_survive:
                for q in queues:
                    while q and taken[q[0]]:
                        q.pop(0)
                    if q and len(chosen) < n_survive:
                        i = q.pop(0)
                        taken[i] = True
                        chosen.append(i)
        level += 1
    idx = np.asarray(chosen, dtype=np.int64)
    return idx, rank[idx], crowding[idx]


class UniformTargetSurvival(Survival):
    """pymoo survival keeping candidates spread over latency targets linspace(min, max, 4).

    Objectives must be (loss, latency ms); infeasible candidates (over budget) are ranked after
    feasible ones by pymoo's base class.
    """

    def __init__(self, latency_min: float, latency_max: float, n_targets: int = N_TARGETS):
        super().__init__(filter_infeasible=True)
        self.targets = latency_targets(latency_min, latency_max, n_targets)

    def _do(self, problem, pop, *args, n_survive=None, **kwargs):
        idx, rank, crowding = select_uniform(pop.get("F"), self.targets, n_survive)
        survivors = pop[idx]
        survivors.set("rank", rank)
        survivors.set("crowding", crowding)
        return survivors
