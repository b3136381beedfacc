import numpy as np
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population
from pymoo.core.problem import Problem

from jcw.search.survival import UniformTargetSurvival, latency_targets, select_uniform


def test_targets_span_min_to_max_in_four_steps():
    np.testing.assert_allclose(latency_targets(6.0, 36.0), [6.0, 16.0, 26.0, 36.0])


def test_round_robin_over_targets_level_by_level():
    lat = np.array([0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32], dtype=float)
    F = np.column_stack([np.full(len(lat), 0.5), lat])
    idx, rank, _ = select_uniform(F, latency_targets(0, 30), 6)
    # level 0: the exact hits of all four targets fit; level 1: one per target, in target order
    assert lat[idx].tolist() == [0, 10, 20, 30, 1, 11]
    assert rank.tolist() == [0, 0, 0, 0, 1, 1]


def test_ties_broken_by_crowding_on_latency():
    F = np.array([[0.1, 16.0], [0.2, 14.0], [0.25, 13.9], [0.3, 12.0], [0.4, 10.5]])
    idx, rank, crowding = select_uniform(F, np.array([10.0]), 3)
    assert sorted(F[idx, 1].tolist()) == [10.5, 12.0, 16.0]
    assert (rank == 0).all()
    assert np.isinf(crowding[:2]).all() and np.isfinite(crowding[2])


def test_selection_prefers_low_loss_at_each_target():
    rng = np.random.default_rng(3)
    lat = rng.uniform(5, 35, size=40)
    loss = rng.uniform(0.2, 1.0, size=40)
    F = np.column_stack([loss, lat])
    idx, _, _ = select_uniform(F, latency_targets(5, 35), 10)
    assert len(set(idx.tolist())) == 10
    near = np.abs(lat - 5) < 3
    best_near_min = np.flatnonzero(near)[np.argmin(loss[near])]
    assert best_near_min in idx


class _Budgeted(Problem):
    def __init__(self):
        super().__init__(n_var=2, n_obj=2, n_ieq_constr=1, xl=0.0, xu=40.0)

    def _evaluate(self, x, out, *args, **kwargs):
        out["F"] = np.column_stack([1.0 / (1.0 + x[:, 0]), x[:, 0]])
        out["G"] = x[:, [0]] - 30.0


def test_survival_ranks_feasible_before_over_budget():
    problem = _Budgeted()
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(5, 40, 16), rng.random(16)])
    pop = Evaluator().eval(problem, Population.new("X", X))
    survivors = UniformTargetSurvival(5.0, 30.0).do(problem, pop, n_survive=8)
    lat = survivors.get("F")[:, 1]
    n_feasible = int((X[:, 0] <= 30).sum())
    assert n_feasible >= 8
    assert (lat <= 30).all()
    assert survivors.get("crowding").shape == (8,)
