"""benchmarks/latency_accuracy.py: the normalisation arithmetic on synthetic numbers (no timing)."""

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "latency_accuracy.py"
_spec = importlib.util.spec_from_file_location("latency_accuracy", _PATH)
la = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("latency_accuracy", la)   # dataclasses look their module up
_spec.loader.exec_module(la)

TARGET = 8.0                                        # the table's reference time (its typical speed)
TRUE = np.array([4.0, 5.0, 6.0, 7.5])               # the archs' times at that speed
PREDICTED = TRUE * np.array([1.02, 0.97, 1.00, 1.05])


def _quiet(rounds: int = 3):
    """Every round at the table's speed: arch times TRUE, every reference timing TARGET."""
    return np.tile(TRUE, (rounds, 1)), np.full((rounds, len(TRUE) + 1), TARGET)


def test_slow_spell_that_slows_arch_and_reference_alike_cancels():
    """An arch measured in a 20 % slow spell, its references also 20 % slow, gets its normal-speed error."""
    rounds, refs = _quiet(rounds=1)
    rounds[0, 2] *= 1.2
    refs[0, 2] *= 1.2                               # before arch 2
    refs[0, 3] *= 1.2                               # after arch 2
    norm = la.normalised_measured(rounds, refs, TARGET)
    np.testing.assert_allclose(norm, TRUE)
    raw = la.summarize(PREDICTED, rounds[0])
    fair = la.summarize(PREDICTED, norm)
    assert fair["median_abs_err"] == pytest.approx(la.summarize(PREDICTED, TRUE)["median_abs_err"])
    assert raw["mean_err"] < fair["mean_err"]       # raw: arch 2 looks 17 % under-predicted
    assert PREDICTED[2] / norm[2] - 1 == pytest.approx(0.0)
    assert PREDICTED[2] / rounds[0, 2] - 1 == pytest.approx(1 / 1.2 - 1)


def test_whole_run_at_another_speed_is_scaled_to_the_tables():
    """Archs measured on a machine 10 % faster than while profiling: normalised back to the table's speed."""
    rounds, refs = _quiet()
    norm = la.normalised_measured(rounds / 1.1, refs / 1.1, TARGET)
    np.testing.assert_allclose(norm, TRUE)


def test_a_real_bias_is_not_hidden():
    """An arch slow while the reference next to it ran at normal speed keeps its error."""
    rounds, refs = _quiet()
    rounds[:, 1] *= 1.3
    norm = la.normalised_measured(rounds, refs, TARGET)
    np.testing.assert_allclose(norm[1], TRUE[1] * 1.3)
    np.testing.assert_allclose(norm[[0, 2, 3]], TRUE[[0, 2, 3]])


def test_one_slow_reference_timing_is_not_taken_for_the_machines_speed():
    """Like the profiler: the faster of the two timings around an arch (a spike in one is ignored)."""
    rounds, refs = _quiet(rounds=1)
    refs[0, 1] *= 1.5                               # between arch 0 and arch 1
    np.testing.assert_allclose(la.normalise(rounds, refs, TARGET), rounds)
    refs[0, 2] *= 1.25                              # now both timings around arch 1 are slow
    scaled = la.normalise(rounds, refs, TARGET)
    assert scaled[0, 1] == pytest.approx(TRUE[1] / 1.25)
    np.testing.assert_allclose(scaled[0, [0, 2, 3]], TRUE[[0, 2, 3]])


def test_rounds_are_combined_by_their_median():
    """Per arch the median over normalised rounds: one lucky or unlucky round does not decide."""
    rounds, refs = _quiet(rounds=3)
    rounds[0, 0] *= 0.8                             # arch 0 lucky in round 0 (reference not)
    rounds[1, 0] *= 1.4                             # unlucky in round 1
    norm = la.normalised_measured(rounds, refs, TARGET)
    assert norm[0] == pytest.approx(TRUE[0])
    assert la.normalise(rounds, refs, TARGET)[:, 0] == pytest.approx(TRUE[0] * np.array([0.8, 1.4, 1.0]))


def test_shapes_and_values_are_checked():
    rounds, refs = _quiet()
    with pytest.raises(ValueError, match=r"\(R, N \+ 1\)"):
        la.normalise(rounds, refs[:, :-1], TARGET)
    with pytest.raises(ValueError, match="positive"):
        la.normalise(rounds, refs, 0.0)
    with pytest.raises(ValueError, match="positive"):
        la.normalise(rounds, refs * 0, TARGET)


def _space_and_predictor(full_ms: float):
    space = SimpleNamespace(full=lambda: np.ones(3), decode_arrays=lambda g: (g, g, g))
    predictor = SimpleNamespace(predict=lambda a, b, c: np.full(len(a), full_ms))
    return space, predictor


def test_table_reference_is_the_median_of_the_profilers_timings():
    table = SimpleNamespace(provenance={"reference_ms": {"m@224": [7.9, 8.0, 12.0, 8.1, 8.05]}})
    space, predictor = _space_and_predictor(9.5)
    ms, source = la.table_reference(table, predictor, space, "m@224")
    assert ms == pytest.approx(8.05)
    assert "median" in source and "5" in source


@pytest.mark.parametrize("provenance", [{}, {"reference_ms": {"other@224": [1.0]}}, {"reference_ms": None}])
def test_table_without_reference_timings_uses_its_full_width_prediction(provenance):
    space, predictor = _space_and_predictor(9.5)
    ms, source = la.table_reference(SimpleNamespace(provenance=provenance), predictor, space, "m@224")
    assert ms == 9.5
    assert "no reference timings" in source


def test_report_prints_raw_and_normalised_lines_with_both_mean_errors():
    rows = [{"arch": 0, "predicted_ms": 4.0, "measured_ms": 5.0, "error": -0.2, "round_ms": [5.0],
             "reference_ms": [10.0], "normalised_ms": 4.0, "normalised_error": 0.0}]
    raw = la.summarize(np.array([4.0]), np.array([5.0]))
    norm = la.summarize(np.array([4.0]), np.array([4.0])) | {"target_ms": 8.0, "target": "median of 3"}
    result = raw | {"normalised": norm, "model": "m", "resolution": 224, "threads": 1, "archs": 1, "seed": 0,
                    "table": "t.json", "predictor_archs_per_s": 1.0, "reference_ms": [10.0],
                    "table_reference_ms": [8.0], "full_width_predicted_ms": 8.2, "rows": rows}
    text = la.report(result)
    raw_line = next(line for line in text.splitlines() if line.startswith("raw "))
    norm_line = next(line for line in text.splitlines() if line.startswith("normalised "))
    assert "mean error -20.00%" in raw_line and "within +-10% 0%" in raw_line
    assert "mean error +0.00%" in norm_line and "within +-10% 100%" in norm_line
