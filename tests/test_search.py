import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jcw.cli.search import main
from jcw.core.errors import UsageError
from jcw.core.util import parse_budget
from jcw.search.config import build_config
from latency.devicemodel import table_path

TINY = {"pretrain_epochs": 1, "batch_size": 32, "calib_batches": 1, "val_samples": 64}
TINY_ARGS = ["--model", "resnet20", "--device", "a53", "--train-resolution", "16", "--population", "4",
             "--supernet-steps", "2", "--seed", "3"]


@pytest.fixture
def tiny_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("JCW_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "tiny.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in TINY.items()))
    return path


@pytest.mark.parametrize("text,ms", [("35ms", 35.0), ("35 ms", 35.0), ("0.035s", 35.0), ("35", 35.0),
                                     (" 12.5ms ", 12.5), ("1e1", 10.0), (7, 7.0)])
def test_budget_parsing(text, ms):
    assert parse_budget(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["35us", "fast", "-3ms", "0", "0ms", "ms", "35 mss", "nan", ""])
def test_bad_budgets_are_rejected(text):
    with pytest.raises(UsageError, match="budget"):
        parse_budget(text)


@pytest.mark.parametrize("budget", ["fast", "0", "-1ms"])
def test_cli_bad_budget_exits_2(budget, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--budget", budget])
    assert e.value.code == 2
    assert "budget" in capsys.readouterr().err


def test_config_file_values_and_cli_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: resnet20\nbudget: 0.02s\npopulation: 6\nsupernet-steps: 9\n")
    config = build_config({"population": 8}, str(path))
    assert (config.model, config.budget_ms, config.population, config.supernet_steps) == ("resnet20", 20.0, 8, 9)
    paper = build_config({"preset": "paper"})
    assert (paper.population, paper.generations) == (64, 128)
    path.write_text("populaton: 6\n")
    with pytest.raises(UsageError, match="populaton"):
        build_config({}, str(path))


def _fails(argv, out, capsys, *expected):
    code = main(argv + ["--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    for text in expected:
        assert text in err, err
    assert "Traceback" not in err
    assert not out.exists()
    return err


def test_errors_exit_2_without_run_dir(tmp_path, tiny_yaml, capsys):
    out = tmp_path / "run"
    base = ["--config", str(tiny_yaml)] + TINY_ARGS
    _fails(["--model", "resnet1000"], out, capsys, "unknown model", "resnet20")
    _fails(base + ["--device", "z80"], out, capsys, "z80")
    _fails(base + ["--threads", "5"], out, capsys, "4 cores")
    _fails(base + ["--lut", str(table_path("a53", 4)), "--resolution", "20"], out, capsys, "no entry")
    _fails(base + ["--lut", str(tmp_path / "nope.json")], out, capsys, "nope.json")
    err = _fails(base + ["--budget", "0.5ms"], out, capsys, "below the fastest arch")
    fastest = float(err.split("thread(s), modelled table): ")[1].split(" ms")[0])
    assert fastest > 0.5
    _fails(base + ["--data", str(tmp_path / "missing")], out, capsys, str(tmp_path / "missing"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    _fails(base + ["--budget", "30ms", "--weights", str(bad)], out, capsys, "--weights", "bad.pt")
    _fails(base + ["--weights", str(tmp_path / "none.pt")], out, capsys, "no such file")
    with pytest.raises(SystemExit) as e:
        main(["--space", "both"])
    assert e.value.code == 2
    assert main(["--resume", "--out", str(tmp_path / "nothing"), "--quiet"]) == 2


def _front(run: Path) -> list:
    return [(c["genes"], round(c["val_loss"], 6), round(c["latency_ms"], 6))
            for c in json.loads((run / "front.json").read_text())["candidates"]]


@pytest.mark.slow
def test_search_outputs_and_resume_equality(tmp_path, tiny_yaml):
    argv = ["--config", str(tiny_yaml)] + TINY_ARGS + ["--budget", "7ms", "--generations", "3", "--quiet"]
    a = tmp_path / "a"
    assert main(argv + ["--out", str(a)]) == 0
    front = json.loads((a / "front.json").read_text())
    assert front["budget_ms"] == 7.0 and front["table"]["provenance"]["kind"] in ("modelled", "measured")
    cands = front["candidates"]
    assert cands and all(c["latency_ms"] <= 7.0 for c in cands)
    F = np.array([[c["val_loss"], c["latency_ms"]] for c in cands])
    for i in range(len(F)):
        dominated = (F <= F[i]).all(1) & (F < F[i]).any(1)
        assert not dominated.any()
    assert {r["name"] for r in front["references"]} == {"unpruned", "uniform 0.75x", "uniform 0.5x"}
    history = json.loads((a / "history.json").read_text())["generations"]
    assert [len(g["candidates"]) for g in history] == [4, 8, 8]
    for g in history:  # the reference models are scored with every generation's set
        assert [r["name"] for r in g["references"]] == ["unpruned", "uniform 0.75x", "uniform 0.5x"]
    assert [r["val_loss"] for r in front["references"]] == [r["val_loss"] for r in history[-1]["references"]]
    best = json.loads((a / "best.json").read_text())
    assert best["val_acc"] == max(c["val_acc"] for c in cands)
    assert len(best["arch"]["layers"]) == 22
    assert (a / "front.png").stat().st_size > 10_000
    assert not (a / ".incomplete").exists()

    b = tmp_path / "b"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-P", "-m", "jcw.search", *argv, "--out", str(b)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (b / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (b / "front.json").exists(), "the run finished before it could be interrupted"
    assert (b / ".incomplete").exists()
    assert main(["--resume", "--out", str(b), "--quiet"]) == 0
    assert _front(b) == _front(a)
    assert json.loads((b / "history.json").read_text()) == json.loads((a / "history.json").read_text())


def _fastest_ms(err):
    return float(err.split("table): ")[1].split(" ms")[0])


def test_config_bounds_loosen_the_space(tmp_path, tiny_yaml, capsys):
    out = tmp_path / "run"
    default = _fails(["--config", str(tiny_yaml)] + TINY_ARGS + ["--budget", "0.5ms"], out, capsys,
                     "below the fastest arch")
    rules = ["channel", "channel_first", "channel_last", "channel_strided", "channel_residual",
             "density", "density_first", "density_last", "density_strided"]
    loose = tmp_path / "loose.yaml"
    loose.write_text(tiny_yaml.read_text() + "bounds: {" + ", ".join(f"{r}: 0.1" for r in rules) + "}\n")
    loosened = _fails(["--config", str(loose)] + TINY_ARGS + ["--budget", "0.5ms"], out, capsys,
                      "below the fastest arch")
    assert _fastest_ms(loosened) < 0.8 * _fastest_ms(default)
    bad = tmp_path / "bad.yaml"
    bad.write_text("bounds: {chanel: 0.1}\n")
    with pytest.raises(UsageError, match="chanel"):
        build_config({}, str(bad))
    bad.write_text("bounds: {density: 1.5}\n")
    with pytest.raises(UsageError, match="bounds"):
        build_config({}, str(bad))


def test_bounds_presets_from_the_cli_and_the_config(tmp_path):
    from jcw.cli.search import parse_args
    from jcw.core.space import BOUNDS_PRESETS, Bounds
    from jcw.search.config import search_bounds

    config = parse_args(["--bounds", "jcw"])
    assert search_bounds(config) == BOUNDS_PRESETS["jcw"] and BOUNDS_PRESETS["jcw"].channel_residual == 0.9
    assert search_bounds(parse_args([])) == Bounds()
    mapping = tmp_path / "b.yaml"
    mapping.write_text("bounds: {channel: 0.4}\n")
    assert search_bounds(build_config({}, str(mapping))) == Bounds(channel=0.4)
    with pytest.raises(SystemExit) as e:
        parse_args(["--bounds", "loose"])
    assert e.value.code == 2
