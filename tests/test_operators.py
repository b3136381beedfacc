import numpy as np
import pytest
from pymoo.core.population import Population
from pymoo.core.problem import Problem

from jcw.search import operators
from jcw.core.space import SearchSpace
from jcw.core.netspec import load_shipped


class _Box(Problem):
    def __init__(self, space):
        super().__init__(n_var=space.n_genes, n_obj=2, xl=space.lower, xu=space.upper)


def _on_grid(space, X):
    dist = np.abs(X[..., None] - space.grid).min(-1)
    return (dist < 1e-9).all()


@pytest.mark.parametrize("mode", ["joint", "channel", "weight"])
def test_variation_keeps_genes_on_grid_and_within_bounds(mode):
    space = SearchSpace(load_shipped("resnet20"), mode=mode)
    problem = _Box(space)
    rng = np.random.default_rng(7)
    X = space.snap(rng.uniform(space.lower, space.upper, size=(16, space.n_genes)))
    pop = Population.new("X", X)
    parents = rng.integers(0, 16, size=(8, 2))
    off = operators.crossover().do(problem, pop, parents, random_state=rng)
    off = operators.mutation(space.n_genes).do(problem, off, random_state=rng)
    raw = off.get("X")
    assert not _on_grid(space, raw)  # SBX/PM really produce off-grid values, repair must fix them
    fixed = operators.GridRepair(space).do(problem, off).get("X")
    assert _on_grid(space, fixed)
    assert (fixed >= space.lower - 1e-12).all() and (fixed <= space.upper + 1e-12).all()
    np.testing.assert_allclose(fixed, space.snap(raw))
    if mode == "channel":
        assert (fixed[:, space.n_channel_genes:] == 1.0).all()
    if mode == "weight":
        assert (fixed[:, : space.n_channel_genes] == 1.0).all()


def test_repair_clips_values_outside_the_bounds():
    space = SearchSpace(load_shipped("resnet20"))
    X = np.vstack([np.full(space.n_genes, -0.3), np.full(space.n_genes, 1.7), np.full(space.n_genes, 0.43)])
    fixed = operators.GridRepair(space).do(_Box(space), Population.new("X", X)).get("X")
    np.testing.assert_allclose(fixed[0], space.lower)
    np.testing.assert_allclose(fixed[1], space.upper)
    np.testing.assert_allclose(fixed[2], np.maximum(0.4, space.lower))


def test_mutation_rate_is_one_gene_in_n():
    space = SearchSpace(load_shipped("resnet20"))
    problem = _Box(space)
    rng = np.random.default_rng(1)
    X = np.tile((space.lower + space.upper) / 2, (2000, 1))
    out = operators.mutation(space.n_genes).do(problem, Population.new("X", X), random_state=rng).get("X")
    changed = (out != X).sum(1).mean()
    assert 0.8 < changed < 1.2


def test_duplicates_are_eliminated():
    X = np.array([[0.5, 0.6], [0.5, 0.6], [0.7, 0.6]])
    unique = operators.duplicate_elimination().do(Population.new("X", X))
    assert len(unique) == 2


def test_initial_sampling_spreads_feasible_archs_over_latency():
    from latency.devices import resolve_table
    from latency.predictor import Predictor

    from jcw.search.problem import JointPruningProblem

    spec = load_shipped("resnet20")
    space = SearchSpace(spec)
    problem = JointPruningProblem(space, Predictor(resolve_table("a53", "resnet20", 4, 32), spec), None, 6.0)
    X = operators.LatencySpreadSampling(space).do(problem, 8, random_state=np.random.default_rng(0)).get("X")
    latency = problem.latency(X)
    assert len(np.unique(X, axis=0)) == 8 and _on_grid(space, X)
    assert (latency <= 6.0).all()
    assert latency.max() - latency.min() > 0.5
