"""Search strategies driven generation by generation: pymoo's NSGA-II and the random-sampling baseline."""

from __future__ import annotations

import pickle

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population

from jcw.prune.random_prune import RandomSampler
from jcw.search import operators
from jcw.search.survival import UniformTargetSurvival


class NSGA2Strategy:
    """pymoo NSGA-II with our operators and uniform-target survival, driven by ask/tell.

    Every generation the parents and the offspring are scored together (one supernet for the
    whole set), then pymoo's survival picks the next parents.
    """

    def __init__(self, problem, config, latency_range: tuple[float, float]):
        space = problem.space
        self.problem = problem
        self.algorithm = NSGA2(
            pop_size=config.population,
            sampling=operators.LatencySpreadSampling(space),
            crossover=operators.crossover(),
            mutation=operators.mutation(len(space.lower)),
            survival=UniformTargetSurvival(*latency_range),
            repair=operators.GridRepair(space),
            eliminate_duplicates=operators.duplicate_elimination(),
        )
        self.algorithm.setup(problem, seed=config.seed, termination=("n_gen", config.generations + 1))
        self.evaluator = Evaluator(skip_already_evaluated=False)

    def step(self) -> Population:
        """Scores one generation (parents + offspring) and selects the next parents; returns the scored set."""
        infills = self.algorithm.ask()
        scored = Population.merge(self.algorithm.pop, infills) if self.algorithm.is_initialized else infills
        self.evaluator.eval(self.problem, scored)
        self.algorithm.tell(infills=infills)
        return scored

    def population(self) -> Population:
        return self.algorithm.pop

    def state(self) -> bytes:
        """The whole algorithm (population, scores, RNG state) without the problem."""
        self.algorithm.problem = None
        try:
            return pickle.dumps(self.algorithm)
        finally:
            self.algorithm.problem = self.problem

    def restore(self, state: bytes) -> None:
        self.algorithm = pickle.loads(state)
        self.algorithm.problem = self.problem


class RandomStrategy:
    """``--strategy random`` of ``jcw.search``: offspring drawn by the RandomSampler instead of SBX + mutation.

    Each generation scores the current population plus ``population`` fresh samples (channel
    ratios in (0, 1) and densities on the grid within the space's bounds, predicted latency in
    the survival's range) and keeps the survivors with the same uniform-target survival as
    NSGA-II, so both strategies spend the same evaluations per generation.  When few draws land
    in that range (a narrow one), the draws closest to it fill the generation.
    """

    def __init__(self, problem, config, latency_range: tuple[float, float]) -> None:
        low, high = latency_range
        full = float(problem.latency(problem.space.full())[0])
        self.sampler = RandomSampler(problem.space, 0.0, (low + high) / 2 / full, max((high - low) / 2 / full, 1e-9),
                                     lambda genes: problem.latency(genes) / full)
        self.problem, self.size = problem, config.population
        self.survival = UniformTargetSurvival(low, high)
        self.rng = np.random.default_rng(config.seed)
        self.pop = Population.new()
        self.evaluator = Evaluator(skip_already_evaluated=False)

    def step(self):
        """Scores the population plus fresh random samples and keeps ``population`` survivors; returns the scored set."""
        fresh = Population.new(X=self.sampler.nearest(self.size, self.rng))
        scored = Population.merge(self.pop, fresh) if len(self.pop) else fresh
        self.evaluator.eval(self.problem, scored)
        self.pop = self.survival.do(self.problem, scored, n_survive=self.size)
        return scored

    def population(self):
        return self.pop

    def state(self) -> bytes:
        """Population and RNG state."""
        return pickle.dumps({"pop": self.pop, "rng": self.rng.bit_generator.state})

    def restore(self, state: bytes) -> None:
        saved = pickle.loads(state)
        self.pop = saved["pop"]
        self.rng.bit_generator.state = saved["rng"]


STRATEGIES: dict[str, type] = {"nsga2": NSGA2Strategy, "random": RandomStrategy}


def register_strategy(name: str, cls: type) -> None:
    """Plugs in another search strategy: ``cls(problem, config, (lat_min, lat_max))`` with ``.step() ->
    scored Population``, ``.population()``, ``.state() -> bytes`` and ``.restore(bytes)``."""
    STRATEGIES[name] = cls
