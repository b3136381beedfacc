"""profile-latency: 4x1 block pruning, real engine timings, resume, provenance, CLI errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from jcw import kernels

from latency.lut import LatencyTable
from jcw.core.netspec import load_shipped
from latency.predictor import Predictor
from latency.lut import Entry
from latency.context import block_pruned
from latency.profile import ProfileConfig, _fastest, _linear_in_channels, main, profile
from jcw.core.errors import UsageError


def _config(out, **kw):
    base = dict(models=("resnet20",), resolution=8, out=out, repeats=3, warmup=1, quick=True)
    return ProfileConfig(**{**base, **kw})


def test_block_pruned_keeps_exact_4x1_blocks():
    rng = np.random.default_rng(0)
    w = block_pruned((10, 6, 3, 3), 0.3, rng)
    rows = np.zeros((12, 54), dtype=np.float32)
    rows[:10] = w.reshape(10, 54)
    blocks = rows.reshape(3, 4, 54)
    nonzero = (blocks != 0).any(axis=1)
    assert nonzero.sum() == round(0.3 * 3 * 54)
    assert ((blocks != 0).all(axis=1) | ~nonzero)[:2].all()   # a kept block is whole (last row is padded)
    assert (block_pruned((8, 4, 1, 1), 0.0, rng) == 0).all()
    assert (block_pruned((8, 4, 1, 1), 1.0, rng) != 0).all()


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("prof") / "t.json"
    return profile(_config(out), progress=False), out


def test_profile_covers_the_model_with_sane_timings(measured):
    table, out = measured
    spec = load_shipped("resnet20").at_resolution(8)
    table.check_covers(spec)
    prov = table.provenance
    assert prov["kind"] == "measured" and prov["complete"] and prov["threads"] == 1
    for k in ("cpu", "engine_version", "date", "host", "governor", "grid"):
        assert k in prov
    assert prov["kernels"].startswith(kernels.kernel_variant() + " (of ")  # the table belongs to these kernels
    assert prov["method"] == "context-v2"
    for e in table.layers.values():   # every point reached by >= 1 context run per round, 3 passes each
        assert (e.mean > 0).all() and (e.count >= 6).all() and (e.count % 3 == 0).all()
    big = table.layer(spec.layer("layer3.2.conv2"))
    assert big.mean[-1, -1, -1] > big.mean[0, 0, 0]
    assert Predictor(table, spec).full() > 0
    assert LatencyTable.load(out).to_json() == table.to_json()


def test_rerun_continues_where_it_stopped(measured, tmp_path):
    table, out = measured
    d = json.loads(out.read_text())
    kept = d["layers"][:3]
    d["layers"] = kept
    d["provenance"]["complete"] = False
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(d))
    again = profile(_config(partial), progress=False)
    assert again.provenance["complete"] and set(again.layers) == set(table.layers)
    for e in kept:
        key = tuple(e[k] for k in ("kind", "kernel", "stride", "in_res", "in_ch", "out_ch"))
        np.testing.assert_allclose(again.layers[key].mean, np.array(e["mean"]))


def test_incompatible_out_is_refused(measured, tmp_path):
    _, out = measured
    with pytest.raises(UsageError, match="measured differently: threads 1 .now 2."):
        profile(_config(out, threads=2), progress=False)
    with pytest.raises(UsageError, match="grid 'quick' .now 'full'"):
        profile(_config(out, quick=False), progress=False)


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    assert main(["--model", "resnet99", "--out", str(tmp_path / "x.json"), "--quiet"]) == 2
    assert "no shipped spec for model 'resnet99'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--threads", "0"])
    assert e.value.code == 2
    bad = tmp_path / "y.json"
    bad.write_text("{}")
    assert main(["--model", "resnet20", "--out", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'format' must be 'jcw-latency-table'" in err and "pass --fresh" in err


@pytest.mark.slow
def test_cli_writes_a_table(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["--model", "resnet20", "--resolution", "8", "--quick", "--repeats", "3",
                 "--out", str(out), "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert LatencyTable.load(out).provenance["command"].startswith("profile-latency --model resnet20")


def test_rounds_keep_the_faster_median_per_point():
    axes = {"out_ch": [4, 8], "in_ch": [4], "density": [0.5, 1.0]}
    a = Entry.build(("pointwise", 1, 1, 8, 8, 8), axes, [[1.0, 2.0], [3.0, 4.0]], [[.1] * 2] * 2, [[3] * 2] * 2)
    b = Entry.build(a.key, axes, [[1.5, 1.0], [2.0, 5.0]], [[.2] * 2] * 2, [[3] * 2] * 2)
    f = _fastest(a, b)
    np.testing.assert_allclose(f.mean.ravel(), [1.0, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(f.std.ravel(), [.1, .2, .2, .1])
    assert (f.count == 6).all()


def test_a_fused_add_entry_is_pooled_into_a_line_in_its_channels():
    axes = {"out_ch": [4, 8, 12, 16], "in_ch": None, "density": None}
    rng = np.random.default_rng(1)
    truth = 0.002 + 0.001 * np.array(axes["out_ch"], dtype=float)
    noisy = truth + rng.normal(0.0, 0.0004, 4)
    noisy[0] += 0.01   # one point caught a spike
    e = Entry.build(("add", 0, 0, 0, 8, 16), axes, noisy.reshape(4, 1, 1), np.ones((4, 1, 1)), np.full((4, 1, 1), 6))
    line = _linear_in_channels(e).mean.ravel()
    assert np.abs(np.diff(line, 2)).max() < 1e-12 and (np.diff(line) >= 0).all()   # a line, rising
    assert np.abs(line[0] - truth[0]) < np.abs(noisy[0] - truth[0]) / 2   # the spike is mostly pooled away
    falling = Entry.build(e.key, axes, np.array([0.2, 0.1, 0.05, 0.0]).reshape(4, 1, 1), e.std, e.count)
    np.testing.assert_allclose(_linear_in_channels(falling).mean.ravel(), [0.075] * 4)   # no negative slope: the median
    through0 = Entry.build(e.key, axes, np.array([0.0, 0.0, 0.1, 0.4]).reshape(4, 1, 1), e.std, e.count)
    got = _linear_in_channels(through0).mean.ravel()
    assert (got >= 0).all() and got[0] > 0 and np.allclose(got / np.array(axes["out_ch"]), got[0] / 4)


def test_an_interrupted_profile_continues_from_its_finished_context_runs(tmp_path, monkeypatch):
    import latency.profile as prof

    out = tmp_path / "t.json"
    real, calls = prof.ContextRunner.measure, []

    def stop_after_40(self, index):
        if len(calls) == 40:
            raise KeyboardInterrupt
        calls.append(index)
        return real(self, index)

    monkeypatch.setattr(prof, "time", type("T", (), {"monotonic": staticmethod(lambda: len(calls) * 100.0)}))
    monkeypatch.setattr(prof.ContextRunner, "measure", stop_after_40)
    with pytest.raises(KeyboardInterrupt):
        profile(_config(out, rounds=1), progress=False)
    assert Path(str(out) + ".partial.json").exists()
    calls.clear()
    monkeypatch.setattr(prof.ContextRunner, "measure", lambda self, i: (calls.append(i), real(self, i))[1])
    table = profile(_config(out, rounds=1), progress=False)
    runs = len(prof.ContextRunner(load_shipped("resnet20").at_resolution(8), _config(out), {}).runs)
    assert 0 < len(calls) <= runs - 39 and min(calls) >= 39   # finished runs were not measured again
    assert table.provenance["complete"] and not Path(str(out) + ".partial.json").exists()
    table.check_covers(load_shipped("resnet20").at_resolution(8))


def test_reference_network_is_timed_between_runs_and_drift_warns(measured, tmp_path, monkeypatch):
    import latency.profile as prof

    table, _ = measured
    runs = len(prof.ContextRunner(load_shipped("resnet20").at_resolution(8), _config(tmp_path / "x"), {}).runs)
    ref = table.provenance["reference_ms"]["resnet20@8"]
    blocks = -(-runs // prof.REFERENCE_EVERY)
    assert len(ref) == 2 * (blocks + 1) and min(ref) > 0     # every REFERENCE_EVERY runs and after, 2 rounds
    steady = iter([1.0, 1.05, 1.02] * 100)                   # within 10 %: no warning (timings faked:
    monkeypatch.setattr(prof.ContextRunner, "reference", lambda self: next(steady))   # real ones jitter)
    quiet = profile(_config(tmp_path / "s.json"), progress=False, log=lambda m: None)
    assert not any("speed changed" in w for w in quiet.provenance["warnings"])
    times = iter([1.0, 1.02] + [1.35] * 100)                 # the machine slows down
    monkeypatch.setattr(prof.ContextRunner, "reference", lambda self: next(times))
    drifted = profile(_config(tmp_path / "d.json"), progress=False, log=lambda m: None)
    warning = [w for w in drifted.provenance["warnings"] if "speed changed" in w]
    assert len(warning) == 1 and "1.00 to 1.35 ms" in warning[0] and "--fresh" in warning[0]


def test_normalise_scales_runs_in_a_slow_spell_back_to_typical_speed():
    from latency.profile import normalise

    # 7 runs in blocks of 2; references before / between / after. The machine is 2x slower from
    # the third timing on: block 2 (runs 4, 5) and block 3 (run 6) lie inside the slow spell, block 1
    # (runs 2, 3) ran before it began. Every run measured the same work: scaled samples agree.
    refs = [1.0, 1.0, 2.0, 2.0, 2.0]
    true = [["L0", (0, 0, 0), [3.0, 3.3]], ["O1", (0, 0, 0), [0.5]]]
    slow = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 2.0, 5: 2.0, 6: 2.0}
    runs = [[[item, idx, [v * slow[j] for v in s]] for item, idx, s in true] for j in range(7)]
    out = normalise(runs, refs, 2, 1.0)
    assert len(out) == 14
    for j in range(7):
        assert out[2 * j][2] == pytest.approx([3.0, 3.3]) and out[2 * j + 1][2] == pytest.approx([0.5])
    # a spike seen by one timing is not a slow block; nothing is scaled up towards a faster timing
    assert normalise(runs[:2], [1.0, 3.0], 2, 1.0)[0][2] == pytest.approx([3.0, 3.3])
    assert normalise(runs[:2], [0.8, 0.9], 2, 1.0)[0][2] == pytest.approx([3.0, 3.3])


def test_rounds_are_pooled_per_grid_point(tmp_path, monkeypatch):
    """Round 1 measures every sample at 1 ms, round 2 at 3 ms: each point keeps the median of both
    rounds' samples (2 ms), not its faster round (1 ms): a table of per-point minima sums to less
    than any whole run."""
    import latency.profile as prof

    real = prof.ContextRunner.measure
    calls = []

    def measure(self, i):
        calls.append(i)
        level = 1.0 if len(calls) <= len(self.runs) else 3.0
        return [[item, idx, [level] * len(s)] for item, idx, s in real(self, i)]

    monkeypatch.setattr(prof.ContextRunner, "measure", measure)
    monkeypatch.setattr(prof.ContextRunner, "reference", lambda self: 1.0)
    table = profile(_config(tmp_path / "p.json"), progress=False, log=lambda m: None)
    assert len(calls) == 2 * len(set(calls))
    for e in table.layers.values():
        assert np.allclose(e.mean, 2.0)


def test_unreached_grid_points_are_interpolated_along_the_channel_axes():
    """Points no context run reaches (a frozen group kept full, a concatenation's sums its colouring never
    combines) are filled from the reached points of the same line: linear inside, constant beyond."""
    from latency.profile import fill_unreached

    axes = {"out_ch": [4, 8, 16], "in_ch": [8, 12, 16, 24], "density": [0.0, 1.0]}
    nan = np.nan
    mean = np.full((3, 4, 2), nan)
    mean[:, 0, :] = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    mean[:, 2, :] = [[3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]
    mean[1, 3, 0] = 9.0
    filled = fill_unreached(mean, axes)
    assert not np.isnan(filled).any() and np.isnan(mean).any()          # a copy
    assert filled[0, 1, 0] == pytest.approx(2.0)                        # halfway between in_ch 8 and 16
    assert filled[0, 3, 1] == pytest.approx(4.0)                        # beyond the last reached: constant
    assert filled[1, 3, 0] == 9.0                                       # reached points stay
    only_full = np.full((3, 1, 1), nan)
    only_full[-1] = 2.5                                                 # a frozen group: its full width only
    assert (fill_unreached(only_full, {"out_ch": [4, 8, 16], "in_ch": None, "density": None}) == 2.5).all()
    assert np.isnan(fill_unreached(np.full((2, 1, 1), nan), {"out_ch": [4, 8], "in_ch": None,
                                                              "density": None})).all()


@pytest.mark.slow
def test_profile_a_model_with_the_new_ops(tmp_path):
    """profile-latency on mobilenet_v3_small (SE, hardswish, hardsigmoid, 5x5 depthwise, hidden linear):
    every entry measured or filled, the act in the keys; skipped while the engine lacks the ops."""
    from jcw.engine import SUPPORTED_OPS

    if not {"HardSwish", "HardSigmoid", "Mul"} <= set(SUPPORTED_OPS):
        pytest.skip("the engine does not run HardSwish, HardSigmoid and Mul yet")
    out = tmp_path / "v3.json"
    table = profile(_config(out, models=("mobilenet_v3_small",), resolution=32), progress=False)
    spec = load_shipped("mobilenet_v3_small").at_resolution(32)
    table.check_covers(spec)
    assert any(k[-1] == "hardswish" for k in table.layers)
    assert Predictor(table, spec).full() > 0
    for e in table.ops.values():
        assert (e.mean >= 0).all()


def test_an_add_with_an_activation_outside_the_relu_class_is_timed_with_it():
    """Its key names the activation; the timer fuses add + activation into a conv and takes the bare conv
    off (so the conv the engine fuses it into is charged without it)."""
    from jcw.core.netspec import OpSpec
    from latency.lut import op_key
    from latency.profile import Timer

    op = OpSpec("add", 8, 16, 0, act="silu")
    assert op_key(op)[-1] == "silu" and op_key(OpSpec("add", 8, 16, 0, act="relu"))[-1] == ""
    timer = Timer(threads=1, repeats=3, warmup=1, flush=4096)
    for o in (op, OpSpec("add", 8, 16, 0, act="relu")):
        samples = timer.op(o, 16, np.random.default_rng(0))
        assert samples.shape == (3,) and (samples >= 0).all() and np.isfinite(samples).all()


def test_profile_a_users_network_from_its_netspec_file(tmp_path, monkeypatch, capsys):
    """python -m jcw.layers --model REF --out spec.json on the workstation, profile-latency --model spec.json on
    the board; resolve_table('host', spec=...) profiles a network outside the zoo on first use."""
    from jcw.layers import main as layers_main
    from jcw.core.netspec import NetSpec
    from jcw.core.space import SearchSpace
    from latency.devices import resolve_table

    blocks = Path(__file__).parent / "user_models" / "blocks.py"
    spec_file = tmp_path / "blocks.json"
    assert layers_main(["--model", f"{blocks}:build", "--resolution", "32", "--out", str(spec_file)]) == 0
    spec = NetSpec.from_json(spec_file.read_text())
    assert spec.model == "blocks.build" and {o.kind for o in spec.ops} >= {"concat", "mul", "avgpool", "add"}
    out = tmp_path / "board.json"
    assert main(["--model", str(spec_file), "--quick", "--rounds", "1", "--repeats", "3", "--warmup", "1",
                 "--out", str(out), "--quiet"]) == 0
    table = LatencyTable.load(out)
    assert table.models == ["blocks.build@32"] and not table.missing(spec)
    space = SearchSpace(spec)
    fastest, full = Predictor(table, spec).predict(*space.decode_arrays(np.stack([space.minimal(), space.full()])))
    assert 0 < fastest < full
    assert main(["--model", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x.json"), "--quiet"]) == 2
    assert "cannot read NetSpec file" in capsys.readouterr().err

    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path / "cache"))
    host = resolve_table("host", spec.model, 1, spec=spec, progress=False)
    assert not host.missing(spec) and "blocks.build@32" in host.models
