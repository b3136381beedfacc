import json

import numpy as np
from PIL import Image

from jcw.cli.plot import main
from jcw.search.plot import draw_runs, plot_runs


def _run(tmp_path, name, budget, seed):
    rng = np.random.default_rng(seed)
    run = tmp_path / name
    run.mkdir()
    def cand(t, a):
        return {"latency_ms": float(t), "val_acc": float(a), "val_loss": float(1 - a), "genes": [0.5]}
    history = {"generations": [{"generation": g, "candidates": [cand(rng.uniform(10, 40), rng.uniform(0.3, 0.9))
                                                                for _ in range(8)]} for g in range(3)]}
    front = {"model": "resnet20", "space": name, "device": "a53", "threads": 4, "budget_ms": budget,
             "table": {"provenance": {"kind": "modelled"}},
             "candidates": [cand(t, a) for t, a in [(12, 0.6), (20, 0.8), (30, 0.9)]],
             "references": [dict(cand(45, 0.95), name="unpruned"), dict(cand(30, 0.85), name="uniform 0.75x"),
                            dict(cand(18, 0.7), name="uniform 0.5x")]}
    (run / "front.json").write_text(json.dumps(front))
    (run / "history.json").write_text(json.dumps(history))
    return run


def test_single_run_plot(tmp_path):
    run = _run(tmp_path, "joint", 35.0, 0)
    out = plot_runs([run], run / "front.png")
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[0] > 300 and img.shape[1] > 500
    assert (img < 100).any() and img.std() > 10


def test_overlay_cli_and_missing_run(tmp_path, capsys):
    a, b = _run(tmp_path, "joint", 35.0, 0), _run(tmp_path, "channel", 35.0, 1)
    out = tmp_path / "both.png"
    assert main([str(a), str(b), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert main([str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "front.json" in capsys.readouterr().err
