"""Op benchmark: the jcw engine vs onnxruntime on MobileNetV3-like blocks (squeeze-excitation, hardswish convs,
a whole inverted residual with SE, a channel concat), each an ONNX model run by both from the same bytes."""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from jcw.engine import ENGINE_VERSION, Engine
from jcw.engine.compare import ort_session, output_diff, timed_pair


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


class _Graph:
    """A small ONNX graph builder: one (1, C, H, W) input, constants, nodes."""

    def __init__(self, c: int, hw: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])]
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: np.ndarray) -> str:
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
             density: float = 1.0) -> str:
        """Conv with bias; `density` keeps that fraction of 4x1 blocks (4 output channels at one input position)."""
        w = self.rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
        w *= np.float32((2.0 / (cin // groups * k * k)) ** 0.5)
        if density < 1.0:
            rows, pos = -(-cout // 4), cin // groups * k * k
            keep = self.rng.random((rows, pos)) < density
            w *= np.repeat(keep, 4, axis=0)[:cout].reshape(w.shape)
        b = self.rng.standard_normal(cout).astype(np.float32) * np.float32(0.1)
        return self.node("Conv", [x, self.const(w), self.const(b)], kernel_shape=[k, k], strides=[stride, stride],
                         pads=[k // 2] * 4, group=groups)

    def act(self, x: str, act: str) -> str:
        if act == "hardswish":
            return self.node("HardSwish", [x])
        if act == "hardsigmoid":
            return self.node("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5)
        if act == "relu":
            return self.node("Relu", [x])
        if act == "silu":
            return self.node("Mul", [x, self.node("Sigmoid", [x])])
        raise ValueError(act)

    def se(self, x: str, c: int, squeeze: int) -> str:
        """Squeeze-excitation: GlobalAveragePool -> 1x1 conv + ReLU -> 1x1 conv + HardSigmoid -> Mul."""
        s = self.act(self.conv(self.node("GlobalAveragePool", [x]), c, squeeze), "relu")
        return self.node("Mul", [x, self.act(self.conv(s, squeeze, c), "hardsigmoid")])

    def model(self, out: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "bench", self.inputs,
                                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
        model.ir_version = 9
        return model


def se_block(c: int, hw: int, seed: int) -> onnx.ModelProto:
    g = _Graph(c, hw, seed)
    return g.model(g.se("x", c, c // 4))


def hardswish_conv(cin: int, cout: int, hw: int, density: float, seed: int, act: str = "hardswish") -> onnx.ModelProto:
    g = _Graph(cin, hw, seed)
    return g.model(g.act(g.conv("x", cin, cout, density=density), act))


def mbv3_block(c: int, expand: int, hw: int, k: int, density: float, seed: int) -> onnx.ModelProto:
    """Inverted residual with SE (MobileNetV3): 1x1 expand + hardswish, kxk depthwise + hardswish, SE,
    1x1 project + residual add."""
    g = _Graph(c, hw, seed)
    e = g.act(g.conv("x", c, expand, density=density), "hardswish")
    d = g.act(g.conv(e, expand, expand, k=k, groups=expand), "hardswish")
    p = g.conv(g.se(d, expand, expand // 4), expand, c, density=density)
    return g.model(g.node("Add", [p, "x"]))


def concat_block(c: int, branch: int, hw: int, seed: int) -> onnx.ModelProto:
    """Two 1x1 conv + SiLU branches concatenated along channels, then a 1x1 conv."""
    g = _Graph(c, hw, seed)
    a = g.act(g.conv("x", c, branch), "silu")
    b = g.act(g.conv("x", c, branch), "silu")
    return g.model(g.conv(g.node("Concat", [a, b], axis=1), 2 * branch, c))


def cases(seed: int) -> list[tuple[str, onnx.ModelProto]]:
    """(label, model) at MobileNetV3-Large shapes (224 input)."""
    return [
        ("SE 120 (squeeze 30) @28", se_block(120, 28, seed)),
        ("SE 672 (squeeze 168) @14", se_block(672, 14, seed)),
        ("SE 960 (squeeze 240) @7", se_block(960, 7, seed)),
        ("conv1x1 80->480 @14 + relu", hardswish_conv(80, 480, 14, 1.0, seed, act="relu")),
        ("conv1x1 80->480 @14 + hardswish", hardswish_conv(80, 480, 14, 1.0, seed)),
        ("conv1x1 80->480 @14 + hardswish, d0.3", hardswish_conv(80, 480, 14, 0.3, seed)),
        ("conv1x1 40->240 @28 + hardswish", hardswish_conv(40, 240, 28, 1.0, seed)),
        ("block 112-672-112 k3 SE @14", mbv3_block(112, 672, 14, 3, 1.0, seed)),
        ("block 112-672-112 k3 SE @14, d0.3", mbv3_block(112, 672, 14, 3, 0.3, seed)),
        ("block 160-960-160 k5 SE @7, d0.3", mbv3_block(160, 960, 7, 5, 0.3, seed)),
        ("concat 2x(64->64 silu) @28", concat_block(64, 64, 28, seed)),
    ]


def run(threads: int, repeats: int, warmup: int, seed: int, profile: bool) -> list[dict]:
    rows = []
    for label, model in cases(seed):
        engine = Engine(model, threads=threads)
        session = ort_session(model, threads)
        x = np.random.default_rng(seed).standard_normal((1,) + engine.input_shape, dtype=np.float32)
        _, rel = output_diff(engine.run(x), session.run(None, {"x": x})[0])
        engine_ms, ort_ms = timed_pair(engine, session, x, repeats, warmup)
        row = {"case": label, "engine_min": engine_ms.min(), "engine_med": float(np.median(engine_ms)),
               "ort_min": ort_ms.min(), "ort_med": float(np.median(ort_ms)), "rel_err": rel,
               "steps": " ".join(f"{p.op}{'+' + p.act if p.act != 'none' else ''}"
                                 f"{'+res' if p.residual else ''}" for p in engine.plan)}
        if profile:
            prof = {}
            for _ in range(3):  # per step: the minimum of three profiles' means
                for k, v in engine.profile(x, repeats=max(3, repeats // 3), warmup=1).items():
                    prof[k] = min(prof.get(k, np.inf), v)
            row["profile"] = [(p.op, p.act, prof[p.name]) for p in engine.plan]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| case | engine min ms | engine median ms | onnxruntime min ms | onnxruntime median ms | "
             "speedup of mins | speedup of medians | max rel err | engine steps |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['case']} | {r['engine_min']:.4f} | {r['engine_med']:.4f} | {r['ort_min']:.4f} | "
              f"{r['ort_med']:.4f} | {r['ort_min'] / r['engine_min']:.2f}x | {r['ort_med'] / r['engine_med']:.2f}x | "
              f"{r['rel_err']:.1e} | {r['steps']} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/ops.py", description=__doc__)
    p.add_argument("--threads", type=int, default=1, help="engine and onnxruntime threads (default 1)")
    p.add_argument("--repeats", type=int, default=200, help="timed runs of each, interleaved (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs of each first (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="also print each case's per-step times (Engine.profile)")
    a = p.parse_args(argv)
    if a.threads < 1 or a.repeats < 1 or a.warmup < 0:
        p.error("need --threads >= 1, --repeats >= 1, --warmup >= 0")
    rows = run(a.threads, a.repeats, a.warmup, a.seed, a.profile)
    print(f"{_cpu_name()}; engine {ENGINE_VERSION}; {a.threads} thread(s); min and median of {a.repeats} "
          f"interleaved runs, batch 1")
    print(table(rows))
    if a.profile:
        for r in rows:
            total = sum(t for _, _, t in r["profile"])
            print(f"\n{r['case']}: per-step ms (min of 3 profiles), sum {total:.4f}")
            print("  " + ", ".join(f"{op}{'+' + act if act != 'none' else ''} {t:.4f}" for op, act, t in r["profile"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
