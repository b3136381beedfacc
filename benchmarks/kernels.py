"""Layer benchmark: jcw sparse/dense conv kernels vs onnxruntime and torch on zoo layer shapes."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from tqdm import tqdm

from jcw import kernels
from jcw.core.util import atomic_write

# (kernel, in_ch, out_ch, input hw, stride, source layer) at 224.
SHAPES = [
    (1, 24, 144, 56, 1, "mobilenet_v2 block expand"),
    (1, 96, 576, 14, 1, "mobilenet_v2 block expand"),
    (1, 384, 64, 14, 1, "mobilenet_v2 block project"),
    (1, 960, 160, 7, 1, "mobilenet_v2 block project"),
    (1, 320, 1280, 7, 1, "mobilenet_v2 last conv"),
    (1, 512, 512, 14, 1, "mobilenet_v1 pointwise"),
    (3, 64, 64, 56, 1, "resnet18 layer1"),
    (3, 128, 128, 28, 1, "resnet18 layer2"),
    (3, 256, 256, 14, 1, "resnet18 layer3"),
    (3, 512, 512, 7, 1, "resnet18 layer4"),
    (3, 64, 128, 56, 2, "resnet18 layer2.0.conv1"),
    (1, 64, 128, 56, 2, "resnet18 layer2.0.downsample"),
]
DENSITIES = (1.0, 0.5, 0.3, 0.2, 0.1)
# Depthwise 3x3 (channels, input hw, stride) of mobilenet_v2 at 224, dense; printed with --depthwise.
DEPTHWISE_SHAPES = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1), (576, 14, 1),
                    (576, 14, 2), (960, 7, 1)]
# Depthwise 5x5 layers of efficientnet_b0 / mobilenet_v3_large (channels, input size, stride).
DEPTHWISE5_SHAPES = [(240, 28, 1), (672, 14, 1), (1152, 7, 1), (144, 56, 2), (672, 14, 2)]


@dataclass
class BenchConfig:
    threads: int = 1
    repeats: int = 30
    warmup: int = 5
    seed: int = 0
    stat: str = "median"
    json_path: str | None = None
    quiet: bool = False
    depthwise: bool = False


def block_pruned_weight(rng: np.random.Generator, out_ch: int, in_ch: int, k: int, density: float) -> np.ndarray:
    """Random OIHW weight keeping round(density * blocks) random 4x1 blocks (4 out channels, one input position)."""
    w = rng.standard_normal((out_ch, in_ch, k, k)).astype(np.float32) * np.float32((2.0 / (in_ch * k * k)) ** 0.5)
    rows = -(-out_ch // 4)
    n = rows * in_ch * k * k
    keep = np.zeros(n, bool)
    keep[rng.choice(n, size=int(round(density * n)), replace=False)] = True
    mask = np.repeat(keep.reshape(rows, in_ch, k, k), 4, axis=0)[:out_ch]
    return w * mask


def ort_session(w: np.ndarray, b: np.ndarray, stride: int, pad: int, hw: int, threads: int,
                groups: int = 1) -> ort.InferenceSession:
    """onnxruntime session of a single Conv (+Relu) with the weights stored densely."""
    k = w.shape[2]
    node = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride, stride], group=groups,
                            pads=[pad] * 4)
    relu = helper.make_node("Relu", ["c"], ["y"])
    graph = helper.make_graph([node, relu], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, w.shape[1] * groups, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_overhead_ms(cfg: BenchConfig) -> float:
    """Median time of an onnxruntime call that does no arithmetic (Identity on a 64x56x56 input)."""
    node = helper.make_node("Identity", ["x"], ["y"])
    info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 56, 56])
    graph = helper.make_graph([node], "id", [info], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cfg.threads
    sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                opts, providers=["CPUExecutionProvider"])
    feed = {"x": np.zeros((1, 64, 56, 56), np.float32)}
    return time_calls(lambda: sess.run(None, feed), cfg.repeats, cfg.warmup)


def time_calls(fn, repeats: int, warmup: int) -> float:
    """Median milliseconds of fn() over `repeats` timed calls."""
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ms))


def bench_layer(cfg: BenchConfig, rng: np.random.Generator, k: int, cin: int, cout: int, hw: int, stride: int,
                density: float, groups: int = 1) -> dict:
    pad = k // 2
    w = block_pruned_weight(rng, cout, cin // groups, k, density)
    b = rng.standard_normal(cout).astype(np.float32) * np.float32(0.1)
    x = rng.standard_normal((cin, hw, hw)).astype(np.float32)
    conv = kernels.Conv2d(w, b, stride=stride, padding=pad, groups=groups, act="relu", threads=cfg.threads)
    sess = ort_session(w, b, stride, pad, hw, cfg.threads, groups)
    feed = {"x": x[None]}
    xt, wt, bt = torch.from_numpy(x[None]), torch.from_numpy(w), torch.from_numpy(b)
    # Interleaved rounds (one call of each engine per round) so load from other processes hits all alike.
    times = {"engine": [], "ort": [], "torch": []}
    with torch.no_grad():
        for i in range(cfg.warmup + cfg.repeats):
            e = float(conv.benchmark(x, repeats=1, warmup=0)[0])
            o = time_calls(lambda: sess.run(None, feed), 1, 0)
            t = time_calls(lambda: F.relu(F.conv2d(xt, wt, bt, stride=stride, padding=pad, groups=groups)), 1, 0)
            if i >= cfg.warmup:
                times["engine"].append(e), times["ort"].append(o), times["torch"].append(t)
    reduce = np.median if cfg.stat == "median" else np.min
    engine_ms, ort_ms, torch_ms = (float(reduce(times[n])) for n in ("engine", "ort", "torch"))
    ho = (hw + 2 * pad - k) // stride + 1
    got = conv.run(x)
    want = sess.run(None, feed)[0][0]
    if not np.allclose(got, want, rtol=1e-3, atol=1e-3):
        raise RuntimeError(f"engine and onnxruntime disagree on {k}x{k} {cin}->{cout} @{hw} density {density}")
    return {
        "kernel": k, "in_ch": cin, "out_ch": cout, "hw": hw, "stride": stride, "density": density,
        "engine_ms": engine_ms, "ort_ms": ort_ms, "torch_ms": torch_ms,
        "_sparse": conv.sparse,
        "_depthwise": groups > 1,
        "_gflops": 2.0 * np.count_nonzero(w) * ho * ho / (engine_ms * 1e-3) * 1e-9,
    }


def run_benchmark(cfg: BenchConfig) -> list[dict]:
    """Times every (shape, density); prints the table; returns the JSON rows."""
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    peak = kernels.fma_peak_gflops(0.3)
    print(f"isa={kernels.isa()} lanes={kernels.simd_lanes()} threads={cfg.threads} stat={cfg.stat} "
          f"measured single-thread FMA peak {peak:.1f} GFLOP/s")
    print(f"onnxruntime per-call overhead (Identity op, same input): {ort_overhead_ms(cfg):.3f} ms, included in 'ort ms'")
    jobs = [(s, d, 1) for s in SHAPES for d in DENSITIES]
    if cfg.depthwise:
        jobs += [((3, c, c, hw, stride, "depthwise"), 1.0, c) for c, hw, stride in DEPTHWISE_SHAPES]
        jobs += [((5, c, c, hw, stride, "depthwise"), 1.0, c) for c, hw, stride in DEPTHWISE5_SHAPES]
    rows = []
    header = (f"{'layer':<24} {'s':>1} {'dens':>4} {'path':>6} {'engine ms':>9} {'ort ms':>8} {'torch ms':>8} "
              f"{'vs ort':>6} {'GFLOP/s':>7} {'%peak':>5}")
    lines = [header, "-" * len(header)]
    for (k, cin, cout, hw, stride, _), density, groups in tqdm(jobs, disable=cfg.quiet, file=sys.stderr):
        r = bench_layer(cfg, rng, k, cin, cout, hw, stride, density, groups)
        rows.append(r)
        name = f"dw{k}x{k} {cin} @{hw}" if groups > 1 else f"{k}x{k} {cin}->{cout} @{hw}"
        lines.append(f"{name:<24} {stride:>1} {density:>4.1f} {'sparse' if r['_sparse'] else 'dense':>6} "
                     f"{r['engine_ms']:>9.3f} {r['ort_ms']:>8.3f} {r['torch_ms']:>8.3f} "
                     f"{r['ort_ms'] / r['engine_ms']:>5.2f}x {r['_gflops']:>7.1f} {100 * r['_gflops'] / peak:>4.0f}%")
    print("\n".join(lines))
    out = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows if not r["_depthwise"]]
    if cfg.json_path:
        atomic_write(cfg.json_path, json.dumps(out, indent=1))
    return out


def scaling_benchmark(cfg: BenchConfig) -> list[dict]:
    """Thread scaling: every shape and density at 1 and ``cfg.threads`` threads, engine and onnxruntime.

    Engine 1-thread and N-thread rounds alternate (so drifting load hits both alike). A round is one
    untimed call, then the median of 3 timed calls: the untimed call wakes the pool's workers, which
    sleep after 0.2 ms idle (in a network the next layer follows within microseconds, so they are
    awake; a 1-thread call of a big layer between two N-thread calls would otherwise add a wake-up,
    measured 20-40 us, to every N-thread call). Each runtime is measured as it runs alone: all
    engine layers first, then all onnxruntime sessions, because once an onnxruntime session with several threads has run in a process, a new engine pool there
    was measured 10-30x slower on small layers (alternating calls; not seen without onnxruntime).
    """
    reduce = np.median if cfg.stat == "median" else np.min
    jobs = [(sh, d) for sh in SHAPES for d in DENSITIES]

    def layer(n):
        (k, cin, cout, hw, stride, _), density = jobs[n]
        rng = np.random.default_rng([cfg.seed, n])
        w = block_pruned_weight(rng, cout, cin, k, density)
        return w, rng.standard_normal(cout).astype(np.float32) * np.float32(0.1), \
            rng.standard_normal((cin, hw, hw)).astype(np.float32)

    eng = []
    for n in tqdm(range(len(jobs)), disable=cfg.quiet, file=sys.stderr, desc="engine"):
        (k, _, _, _, stride, _), _ = jobs[n]
        w, b, x = layer(n)
        convs = [kernels.Conv2d(w, b, stride=stride, padding=k // 2, act="relu", threads=t) for t in (1, cfg.threads)]
        ms = [[], []]
        for i in range(cfg.warmup + cfg.repeats):
            for j, conv in enumerate(convs):
                t = float(np.median(conv.benchmark(x, repeats=3, warmup=1)))
                if i >= cfg.warmup:
                    ms[j].append(t)
        eng.append([float(reduce(m)) for m in ms])
    rows = []
    header = f"{'layer':<24} {'s':>1} {'dens':>4} {'eng 1t ms':>9} {'eng Nt ms':>9} {'scaling':>7} {'ort 1t':>7} {'ort Nt':>7} {'ort scal':>8}"
    lines = [f"isa={kernels.isa()} threads 1 vs {cfg.threads} stat={cfg.stat} repeats={cfg.repeats}", header, "-" * len(header)]
    for n in tqdm(range(len(jobs)), disable=cfg.quiet, file=sys.stderr, desc="onnxruntime"):
        (k, cin, cout, hw, stride, _), density = jobs[n]
        w, b, x = layer(n)
        ort_ms = []
        for t in (1, cfg.threads):
            sess = ort_session(w, b, stride, k // 2, hw, t)
            run = lambda: sess.run(None, {"x": x[None]})  # noqa: E731
            time_calls(run, 1, cfg.warmup)
            ort_ms.append(float(reduce([time_calls(run, 3, 1) for _ in range(cfg.repeats)])))
        e1, en = eng[n]
        rows.append({"kernel": k, "in_ch": cin, "out_ch": cout, "hw": hw, "stride": stride, "density": density,
                     "engine_ms_1": e1, "engine_ms_n": en, "ort_ms_1": ort_ms[0], "ort_ms_n": ort_ms[1],
                     "threads": cfg.threads})
        lines.append(f"{f'{k}x{k} {cin}->{cout} @{hw}':<24} {stride:>1} {density:>4.1f} {e1:>9.3f} {en:>9.3f} "
                     f"{e1 / en:>6.2f}x {ort_ms[0]:>7.3f} {ort_ms[1]:>7.3f} {ort_ms[0] / ort_ms[1]:>7.2f}x")
    big = [r for r in rows if (r["hw"] - 1) // r["stride"] + 1 >= 14]
    ok = sum(r["engine_ms_1"] / r["engine_ms_n"] >= 1.7 for r in big)
    lines.append(f"outputs >= 14x14: {ok} of {len(big)} layer/density points at >= 1.7x; median engine scaling "
                 f"{np.median([r['engine_ms_1'] / r['engine_ms_n'] for r in big]):.2f}x, onnxruntime "
                 f"{np.median([r['ort_ms_1'] / r['ort_ms_n'] for r in big]):.2f}x")
    print("\n".join(lines))
    if cfg.json_path:
        atomic_write(cfg.json_path, json.dumps(rows, indent=1))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", dest="json_path", metavar="PATH", help="also write the rows as a JSON list")
    p.add_argument("--threads", type=int, default=1, help="threads for every engine (default 1)")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per layer, median reported (default 30)")
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="per-layer statistic over the interleaved rounds (default median; min resists load from other processes)")
    p.add_argument("--seed", type=int, default=0, help="weight/input seed (default 0)")
    p.add_argument("--depthwise", action="store_true",
                   help="also time dense depthwise layers: the 3x3 ones of mobilenet_v2, 5x5 ones of efficientnet_b0 "
                        "(table only, not in --json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--scaling", action="store_true",
                   help="thread scaling instead: every layer at 1 and --threads threads (engine and onnxruntime)")
    a = p.parse_args(argv)
    if a.threads < 1 or a.repeats < 1:
        p.error("--threads and --repeats must be >= 1")
    if a.scaling:
        if a.threads < 2:
            p.error("--scaling needs --threads >= 2")
        scaling_benchmark(BenchConfig(threads=a.threads, repeats=a.repeats, seed=a.seed, stat=a.stat, json_path=a.json_path,
                                      quiet=a.quiet))
        return
    run_benchmark(BenchConfig(threads=a.threads, repeats=a.repeats, seed=a.seed, stat=a.stat, depthwise=a.depthwise, json_path=a.json_path, quiet=a.quiet))


if __name__ == "__main__":
    main()
