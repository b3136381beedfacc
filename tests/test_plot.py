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


def _line(ax, label):
    return next(line for line in ax.get_lines() if line.get_label() == label)


def test_single_run_draws_the_front_the_budget_and_every_candidate_where_the_data_says(tmp_path):
    run = _run(tmp_path, "joint", 35.0, 0)
    front = json.loads((run / "front.json").read_text())
    history = json.loads((run / "history.json").read_text())
    ax = draw_runs([(front, history)]).axes[0]
    line = _line(ax, "final front")
    np.testing.assert_array_equal(line.get_xdata(), [12, 20, 30])
    np.testing.assert_array_equal(line.get_ydata(), [0.6, 0.8, 0.9])
    budget = _line(ax, "budget 35 ms")
    assert list(budget.get_xdata()) == [35.0, 35.0] and budget.get_linestyle() == "--"
    seen = ax.collections[0].get_offsets()
    expected = [(c["latency_ms"], c["val_acc"]) for g in history["generations"] for c in g["candidates"]]
    np.testing.assert_allclose(seen, expected)
    refs = {tuple(np.round(c.get_offsets()[0], 6)) for c in ax.collections[1:]}
    assert refs == {(45.0, 0.95), (30.0, 0.85), (18.0, 0.7)}
    assert ax.get_xlim()[0] < 12 and ax.get_xlim()[1] > 45


def test_the_png_shows_the_budget_line_at_its_x_position(tmp_path):
    run = _run(tmp_path, "joint", 35.0, 0)
    fig = draw_runs([(json.loads((run / "front.json").read_text()), json.loads((run / "history.json").read_text()))])
    ax = fig.axes[0]
    fig.canvas.draw()
    x_pixel = ax.transData.transform((35.0, 0.5))[0]
    height = fig.canvas.get_width_height()[1]
    out = plot_runs([run], run / "front.png")
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape[0] == height
    red = (img[..., 0] > 150) & (img[..., 1] < 100) & (img[..., 2] < 100)  # tab:red dashes of the budget
    columns = np.flatnonzero(red.sum(0) > 20)
    assert columns.size and abs(columns.mean() - x_pixel) <= 3


def test_overlay_cli_and_missing_run(tmp_path, capsys):
    a, b = _run(tmp_path, "joint", 35.0, 0), _run(tmp_path, "channel", 35.0, 1)
    out = tmp_path / "both.png"
    assert main([str(a), str(b), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert main([str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "front.json" in capsys.readouterr().err
