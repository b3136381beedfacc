"""NEON microkernels under llvm-mca: cycles per steady-state iteration on Cortex-A53 and Cortex-A72.

    python benchmarks/arm_mca.py [--json PATH] [--cores cortex-a53,cortex-a72] [--show-asm KERNEL]

No ARM board is needed.  The engine's conv kernels (kernels/src, the NEON path of simd.h:
JCW_LANES = 4) are cross-compiled with ``aarch64-linux-gnu-g++ -std=c++17 -O3 -ffp-contract=fast
-mcpu=<core>`` through ``benchmarks/arm_mca_driver.cpp``, which instantiates each microkernel in
its own noinline extern "C" function (steady-state geometry, ReLU and no residual fixed at compile
time, so the code around the inner loop is one straight path).  From the assembly (``-S``) of each
function this script takes

- the inner loop: the innermost loop (label to backward branch) that holds FP multiply-adds, the
  one with the most of them when there are several (e.g. the row-pair loop of the depthwise
  kernel, not its single-row loop);
- the overhead: the smallest loop enclosing the inner loop, minus the inner loop's instructions,
  i.e. the code run once per outer iteration (accumulator init, epilogue, stores, pointer setup).

A second driver, ``benchmarks/arm_mca_ops.cpp``, holds what latency/devicemodel.py needs beyond the
convs at ReLU: the engine's depthwise kernel on padded planes (``depthwise_range``: 5x5 and every
depthwise conv but 3x3 pad 1; its tap loop is the inner loop, the vector's code around it the
overhead); ``epilogue<a>``, the engine's activation ``a`` (simd::activate) on the 4 independent
vectors of one tile row; and the loops of the elementwise steps: ``act<a>``, ``add<relu>``,
``mul``, ``scale`` (squeeze-excitation), ``copy`` (concatenation) and ``sum`` (average pooling),
one vector per iteration.  A loop's cycles per
iteration are those of the innermost loop of its function (no FMA needed, no overhead).  Their rows
follow the conv rows, with the ops driver's own ``sources`` and ``sources_sha256``.

The channel-vectorised dense 1x1 kernel (cv_tile) is not listed: the engine runs it only with 8 or
more lanes; on NEON dense 1x1 layers on small images run the 4x1-block tile like all others.

Each block runs through ``llvm-mca -mtriple=aarch64 -mcpu=<core> -iterations=200`` as a loop
body; cycles per iteration = "Total Cycles" / iterations.  The FMA peak of each model is measured
the same way on 16 independent 128-bit FMLAs (16 cycles on both models: 8 FLOP/cycle).  FLOPs
count 2 per multiply-add lane of the kernel's arithmetic (MACs the convolution needs), not the
extra FMUL/FADD a kernel may spend on splitting a sum into independent chains.

Memory behaviour is outside llvm-mca's model: every load hits L1 with the model's fixed load
latency; cache misses, prefetch effects, TLB and bandwidth limits are not simulated.  The figures
are the upper bound a core can reach when the data is in L1, and they compare code schedules.

JSON (``--json``): a list of objects, one per (core, kernel, kind):
``core`` ("cortex-a53" | "cortex-a72"), ``kernel`` (microkernel and its parameters), ``kind``
(sparse_1x1 | sparse_3x3 | dense_1x1 | dense_3x3 | depthwise_3x3 | depthwise_kxk: the engine layer
kinds that run this loop; act_<a> | epilogue_<a> | add | mul | scale | copy | sum for the loops,
whose flops, macs and peak_fraction are 0), ``cycles_per_iter``, ``flops_per_iter`` (= 2 * macs_per_iter), ``macs_per_iter``,
``peak_fraction`` (flops_per_iter / cycles_per_iter / model peak FLOP per cycle),
``outputs_per_iter`` (output floats whose accumulators one iteration updates), ``iteration``
(what one iteration is), ``bottleneck`` (the busiest resource and the cycles it does not
explain), ``block_rthroughput`` (llvm-mca's resource-bound estimate), ``instructions_per_iter``,
``overhead_cycles`` (llvm-mca cycles of one outer iteration's code around the inner loop),
``overhead_per`` (what one overhead unit is), ``peak_flops_per_cycle`` and ``sources_sha256``
(sha256 of the repository files the driver compiled, concatenated in sorted path order, so a
consumer can tell when the kernels changed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "benchmarks" / "arm_mca_driver.cpp"
OPS_DRIVER = ROOT / "benchmarks" / "arm_mca_ops.cpp"  # non-conv ops, activations, depthwise on planes (5x5)
CXX = "aarch64-linux-gnu-g++"
CXXFLAGS = ["-std=c++17", "-O3", "-ffp-contract=fast"]
CORES = ("cortex-a53", "cortex-a72")
# The kernel variant CMakeLists.txt builds for each core, and its defines (the -mcpu here also sets
# the tuning, as the variant's -mtune does).
VARIANT = {"cortex-a53": ("neon_a53", ["-DJCW_TUNE_IN_ORDER=1"]), "cortex-a72": ("neon", [])}
ITERATIONS = 200
LANES = 4  # NEON: JCW_LANES


@dataclass(frozen=True)
class Kernel:
    function: str  # extern "C" function in the driver
    name: str  # "kernel" in the JSON
    kinds: tuple[str, ...]
    macs: int  # multiply-adds of the convolution per inner iteration
    outputs: int  # output floats one inner iteration updates
    iteration: str
    overhead_per: str
    fma_per_unit: int = 0  # FMLAs of one iteration: a loop unrolled by u holds u * this (0: not unrolled)
    deepest: bool = False  # of several inner loops, take the most deeply nested (its enclosing loop is the
    #                        one run per outer unit), not the one with the most FMAs


# NEON parameters: L = 4 lanes, NV = JCW_TILE_VECS = 4 vectors per tile row.
KERNELS = (
    Kernel("mca_tile_rows", "tile_rows<4,4>", ("sparse_1x1", "sparse_3x3", "dense_1x1", "dense_3x3"),
           macs=4 * 4 * LANES, outputs=4 * 4 * LANES,
           iteration="one kept 4x1 block: 4 output channels x 16 pixels (4 vectors), 16 FMLA",
           overhead_per="block row x tile (bias init, ReLU, 16 vector stores of 4 rows x 16 pixels)",
           fma_per_unit=16),
    Kernel("mca_tile_rows_pf", "tile_rows<4,4,prefetch>", ("sparse_1x1", "sparse_3x3", "dense_1x1", "dense_3x3"),
           macs=4 * 4 * LANES, outputs=4 * 4 * LANES,
           iteration="one kept 4x1 block: 4 output channels x 16 pixels, 16 FMLA, + 1 input prefetch",
           overhead_per="block row x tile (bias init, ReLU, 16 vector stores of 4 rows x 16 pixels)",
           fma_per_unit=16),
    Kernel("mca_dw3_direct", "depthwise3x3_direct<4> row pair", ("depthwise_3x3",),
           macs=2 * 9 * LANES, outputs=2 * LANES,
           iteration="one column vector of an output row pair (stride 1): 2 rows x 4 pixels, 18 taps",
           overhead_per="output row pair x channel (first and overlapped last vectors, pointers; on cortex-a53 "
                        "also the assembly loop's first two trips and its odd last trip: latency/devicemodel.py "
                        "costs that core's rows from the trips and the compiled loop's entry instead)",
           fma_per_unit=12),  # the C++ loop: 12 FMLA + 6 FMUL per column; the A53 assembly: 2 trips x 2 columns
    Kernel("mca_dw3_direct_cpp", "depthwise3x3_direct_cpp<4> row pair", ("depthwise_3x3",),
           macs=2 * 9 * LANES, outputs=2 * LANES,
           iteration="one column vector of an output row pair (stride 1), compiled loop: on cortex-a53 the "
                     "columns the assembly leaves and rows narrower than 16; on cortex-a72 the loop above",
           overhead_per="output row pair x channel (first and overlapped last vectors, pointers)",
           fma_per_unit=12),
    Kernel("mca_dw3s2_direct", "depthwise3x3s2_direct<4>", ("depthwise_3x3",),
           macs=9 * LANES, outputs=LANES,
           iteration="one output vector (stride 2): 4 pixels, 9 taps from 3 input rows",
           overhead_per="output row x channel (overlapped last vector, row pointers; on cortex-a53 also the "
                        "assembly's first two and odd last trips: latency/devicemodel.py costs that core's rows "
                        "from the trips and the compiled loop's entry instead)",
           fma_per_unit=6),  # the C++ loop: 7 FMLA + 2 FMUL per vector; the A53 assembly: 2 trips x 2 vectors
    Kernel("mca_dw3s2_direct_cpp", "depthwise3x3s2_direct_cpp<4>", ("depthwise_3x3",),
           macs=9 * LANES, outputs=LANES,
           iteration="one output vector (stride 2), compiled loop: on cortex-a53 the outputs the assembly "
                     "leaves and images narrower than 32; on cortex-a72 the loop above",
           overhead_per="output row x channel (overlapped last vector, row pointers)", fma_per_unit=6),
    Kernel("mca_dw3_flat", "depthwise_flat<4,3>", ("depthwise_3x3",),
           macs=9 * LANES, outputs=LANES,
           iteration="one output vector (stride 1, images narrower than 4): 4 pixels, 9 taps",
           overhead_per="channel (overlapped last vector, weights)"),
    Kernel("mca_dw5_flat", "depthwise_flat<4,5>", ("depthwise_kxk",),
           macs=25 * LANES, outputs=LANES,
           iteration="one output vector (5x5 stride 1, any image): 4 pixels, 25 taps, 4 column masks",
           overhead_per="channel (overlapped last vector, weights)"),
)

# Microkernels of the second driver (arm_mca_ops.cpp), analysed like KERNELS.
DW_RANGE = Kernel("mca_dw_range", "depthwise_range<4> taps", ("depthwise_kxk",),
                  macs=LANES, outputs=LANES,
                  iteration="one tap of one output vector (planes, taps at run time: 5x5 and every depthwise conv "
                            "but 3x3 pad 1): 4 pixels, 1 FMLA",
                  overhead_per="output vector (bias, ReLU, store, the tap loop's set-up)", deepest=True)
# Microkernels of the second driver (arm_mca_ops.cpp), analysed like KERNELS.
OPS_KERNELS = (DW_RANGE,)
MORE_ACTS = ("hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "leaky_relu")  # outside the ReLU class


@dataclass(frozen=True)
class Loop:
    """An elementwise loop of arm_mca_ops.cpp: one iteration handles ``vectors`` vectors of 4 floats."""

    function: str
    name: str
    kind: str
    vectors: int
    iteration: str


ACTIVATIONS = ("relu", "relu6", *MORE_ACTS)
LOOPS = tuple(
    [Loop(f"mca_act_{a}", f"act<{a}>", f"act_{a}", 1, f"one vector: load, {a}, store (an act step: simd::emit)")
     for a in ACTIVATIONS]
    + [Loop(f"mca_epi_{a}", f"epilogue<{a}>", f"epilogue_{a}", 4,
            f"4 independent vectors (one row of a tile's epilogue): load, {a} (simd::activate), store")
       for a in ACTIVATIONS]
    + [Loop("mca_add", "add<relu>", "add", 1, "one vector: two loads, add, ReLU, store (an add step: simd::emit)"),
       Loop("mca_mul", "mul", "mul", 1, "one vector: two loads, multiply, store (elementwise mul)"),
       Loop("mca_scale", "scale", "scale", 1, "one vector: load, multiply by the channel's gate, store "
                                              "(squeeze-excitation)"),
       Loop("mca_copy", "copy", "copy", 1, "one vector: load, store (a concatenation's copy)"),
       Loop("mca_sum", "sum", "sum", 1, "one vector: load, add into a running sum (average pooling)")])

BRANCH = re.compile(
    r"^\s+(?:b|b\.?(?:eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)|cbn?z|tbn?z)\s+.*?(\.L\w+|\d+b)\s*$")
LABEL = re.compile(r"^\s*(\.L\w+|\d+):")  # compiler labels and numeric local labels of inline assembly
FMA = re.compile(r"^\s+(fmla|fmls|fmadd|fmsub)\b")


def is_instruction(line: str) -> bool:
    t = line.strip()
    return line.startswith("\t") and not t.startswith((".", "//", "#")) and t != "" and not LABEL.match(line)


def functions(asm: str) -> dict[str, list[str]]:
    """Lines of each driver function (from its label to its .size directive)."""
    out: dict[str, list[str]] = {}
    cur = None
    for line in asm.splitlines():
        m = re.match(r"^(mca_\w+):", line)
        if m:
            cur = m.group(1)
            out[cur] = []
            continue
        if cur is None:
            continue
        if line.startswith("\t.size"):
            cur = None
            continue
        out[cur].append(line)
    return out


def loops(lines: list[str]) -> list[tuple[int, int]]:
    """(label line, backward branch line) of every loop."""
    labels: dict[str, int] = {}
    found = []
    for i, line in enumerate(lines):
        m = LABEL.match(line)
        if m:
            labels[m.group(1)] = i
            continue
        m = BRANCH.match(line)
        target = m.group(1).rstrip("b") if m and m.group(1)[0].isdigit() else (m.group(1) if m else None)
        if target in labels:
            found.append((labels[target], i))
    return found


def innermost(lines: list[str]) -> list[str]:
    """Instructions of the innermost loop (no loop inside it) with the most instructions."""
    all_loops = loops(lines)
    inner = [(a, b) for a, b in all_loops if not any((c, d) != (a, b) and a <= c and d <= b for c, d in all_loops)]
    if not inner:
        raise RuntimeError("no loop")
    a, b = max(inner, key=lambda ab: ab[1] - ab[0])
    return [x for x in lines[a:b + 1] if is_instruction(x)]


def n_fma(lines: list[str]) -> int:
    return sum(bool(FMA.match(x)) for x in lines)


def split_loop(lines: list[str], deepest: bool = False) -> tuple[list[str], list[str]]:
    """(inner loop instructions, enclosing loop's other instructions)."""
    all_loops = loops(lines)
    with_fma = [(a, b) for a, b in all_loops if n_fma(lines[a:b + 1])]
    if not with_fma:
        raise RuntimeError("no loop with FMAs")
    # innermost: no other FMA loop strictly inside
    inner = [(a, b) for a, b in with_fma
             if not any((c, d) != (a, b) and a <= c and d <= b for c, d in with_fma)]
    if deepest:
        depth = {ab: sum(c <= ab[0] and ab[1] <= d for c, d in all_loops) for ab in inner}
        a, b = max(inner, key=lambda ab: (depth[ab], n_fma(lines[ab[0]:ab[1] + 1]), -(ab[1] - ab[0])))
    else:
        a, b = max(inner, key=lambda ab: (n_fma(lines[ab[0]:ab[1] + 1]), -(ab[1] - ab[0])))
    body = [x for x in lines[a:b + 1] if is_instruction(x)]
    outer = [(c, d) for c, d in all_loops if c <= a and b <= d and (c, d) != (a, b)]
    over: list[str] = []
    if outer:
        c, d = min(outer, key=lambda cd: cd[1] - cd[0])
        over = [x for i, x in enumerate(lines[c:d + 1], start=c) if is_instruction(x) and not a <= i <= b]
    return body, over


@dataclass
class Mca:
    cycles: float
    rthroughput: float
    instructions: int
    pressure: dict[str, float]
    bottlenecks: list[str]
    text: str


def run_mca(body: list[str], core: str, tmp: Path, extra: tuple[str, ...] = ()) -> Mca:
    src = tmp / "block.s"
    src.write_text("\n".join(body) + "\n")
    args = ["llvm-mca", "-mtriple=aarch64", f"-mcpu={core}", f"-iterations={ITERATIONS}", *extra, str(src)]
    if core != "cortex-a53":  # bottleneck analysis exists for out-of-order models only
        args.insert(-1, "-bottleneck-analysis")
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    t = r.stdout
    total = float(re.search(r"Total Cycles:\s+(\d+)", t).group(1))
    rthr = float(re.search(r"Block RThroughput:\s+([\d.]+)", t).group(1))
    # resource names, then the "per iteration" row
    names = dict(re.findall(r"^\[([\d.]+)\]\s+-\s+(\S+)", t, re.M))
    m = re.search(r"Resource pressure per iteration:\n(.*)\n(.*)\n", t)
    cols = re.findall(r"\[([\d.]+)\]", m.group(1))
    vals = m.group(2).split()
    pressure: dict[str, float] = {}
    for c, v in zip(cols, vals):
        nm = names.get(c, c) + (f"[{c.split('.')[1]}]" if "." in c else "")
        pressure[nm] = 0.0 if v == "-" else float(v)
    bn = []
    m = re.search(r"Throughput Bottlenecks:\s*\n((?:\s+.*\n)+?)\n", t)
    if m:
        bn = [x.strip() for x in m.group(1).splitlines() if x.strip()]
    return Mca(total / ITERATIONS, rthr, len(body), pressure, bn, t)


def bottleneck(m: Mca, core: str) -> str:
    """Busiest resource, and the cycles its pressure does not explain."""
    res, p = max(m.pressure.items(), key=lambda kv: kv[1])
    s = f"{res} busy {p:.1f} of {m.cycles:.1f} cy"
    gap = m.cycles - p
    if gap > 0.1 * m.cycles:
        why = "in-order issue stalls on load/FMA latency" if core == "cortex-a53" else "dependency chains"
        s += f"; {gap:.1f} cy not resource-bound ({why})"
    else:
        s += " (resource-bound)"
    return s


def fma_peak(core: str, tmp: Path) -> float:
    """FLOP per cycle of 16 independent 128-bit FMLAs under the model."""
    body = [f"\tfmla\tv{i}.4s, v16.4s, v17.4s" for i in range(16)]
    m = run_mca(body, core, tmp)
    return 16 * 2 * LANES / m.cycles


def compile_driver(core: str, tmp: Path, driver: Path = DRIVER) -> str:
    out = tmp / f"{driver.stem}-{core}.s"
    cmd = [CXX, *CXXFLAGS, f"-mcpu={core}", *VARIANT.get(core, ("", []))[1], f"-I{ROOT / 'kernels/include'}", f"-I{ROOT / 'kernels/src'}", "-S",
           str(driver), "-o", str(out)]
    subprocess.run(cmd, check=True)
    return out.read_text()


def kernel_sources(driver: Path = DRIVER) -> list[str]:
    """The repository files the driver includes (itself too), relative to the root, sorted."""
    r = subprocess.run([CXX, *CXXFLAGS, f"-I{ROOT / 'kernels/include'}", f"-I{ROOT / 'kernels/src'}", "-MM",
                        str(driver)], capture_output=True, text=True, check=True)
    deps = r.stdout.split(":", 1)[1].replace("\\\n", " ").split()
    return sorted({str(Path(p).resolve().relative_to(ROOT)) for p in deps if Path(p).resolve().is_relative_to(ROOT)})


def sources_sha256(paths: list[str]) -> str:
    """sha256 of the files concatenated in the given (sorted) order."""
    h = hashlib.sha256()
    for p in paths:
        h.update((ROOT / p).read_bytes())
    return h.hexdigest()


def measure(cores: tuple[str, ...], show_asm: str | None = None) -> tuple[list[dict], dict[str, float]]:
    """Rows of the conv driver's kernels (every core), then those of the ops driver (every core)."""
    rows: list[dict] = []
    peaks: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for core in cores:
            peaks[core] = fma_peak(core, tmp)
        rows += measure_kernels(cores, DRIVER, KERNELS, peaks, tmp, show_asm)
        rows += measure_kernels(cores, OPS_DRIVER, OPS_KERNELS, peaks, tmp, show_asm)
        rows += measure_loops(cores, peaks, tmp, show_asm)
    return rows, peaks


def measure_loops(cores, peaks: dict[str, float], tmp: Path, show_asm: str | None) -> list[dict]:
    """One row per (core, elementwise loop of the ops driver): cycles per iteration of the loop."""
    paths = kernel_sources(OPS_DRIVER)
    sha = sources_sha256(paths)
    rows = []
    for core in cores:
        funcs = functions(compile_driver(core, tmp, OPS_DRIVER))
        for k in LOOPS:
            body = innermost(funcs[k.function])
            m = run_mca(body, core, tmp)
            if show_asm and show_asm in (k.function, k.name):
                print(f"== {core} {k.name}: loop\n" + "\n".join(body))
                print(m.text)
            rows.append({
                "core": core, "variant": VARIANT.get(core, ("neon", []))[0], "kernel": k.name, "kind": k.kind,
                "cycles_per_iter": round(m.cycles, 3),
                "flops_per_iter": 0.0,
                "macs_per_iter": 0.0,
                "peak_fraction": 0.0,
                "outputs_per_iter": k.vectors * LANES,
                "iteration": k.iteration,
                "bottleneck": bottleneck(m, core),
                "block_rthroughput": m.rthroughput,
                "instructions_per_iter": float(m.instructions),
                "fma_instructions_per_iter": float(n_fma(body)),
                "loop_unroll": 1,
                "overhead_cycles": 0.0,
                "overhead_per": "",
                "peak_flops_per_cycle": round(peaks[core], 4),
                "sources_sha256": sha,
                "sources": paths,
            })
    return rows


def measure_kernels(cores, driver: Path, kernels, peaks: dict[str, float], tmp: Path,
                    show_asm: str | None) -> list[dict]:
    """One row per (core, microkernel, kind) of ``driver``: its inner loop and the code around it."""
    paths = kernel_sources(driver)
    sha = sources_sha256(paths)
    rows: list[dict] = []
    for core in cores:
        funcs = functions(compile_driver(core, tmp, driver))
        for k in kernels:
            body, over = split_loop(funcs[k.function], k.deepest)
            m = run_mca(body, core, tmp)
            ov = run_mca(over, core, tmp).cycles if over else 0.0
            # Per iteration (one block, one input channel, ...) when the loop holds several.
            unroll = max(1, round(n_fma(body) / k.fma_per_unit)) if k.fma_per_unit else 1
            if unroll > 1:
                m.cycles /= unroll
                m.rthroughput /= unroll
                m.pressure = {r: v / unroll for r, v in m.pressure.items()}
            if show_asm and show_asm in (k.function, k.name):
                print(f"== {core} {k.name}: inner loop\n" + "\n".join(body))
                print(f"== {core} {k.name}: overhead\n" + "\n".join(over))
                print(m.text)
            flops = 2.0 * k.macs
            for kind in k.kinds:
                rows.append({
                    "core": core, "variant": VARIANT.get(core, ("neon", []))[0], "kernel": k.name, "kind": kind,
                    "cycles_per_iter": round(m.cycles, 3),
                    "flops_per_iter": flops,
                    "macs_per_iter": float(k.macs),
                    "peak_fraction": round(flops / m.cycles / peaks[core], 4),
                    "outputs_per_iter": k.outputs,
                    "iteration": k.iteration,
                    "bottleneck": bottleneck(m, core),
                    "block_rthroughput": m.rthroughput,
                    "instructions_per_iter": m.instructions / unroll,
                    "fma_instructions_per_iter": n_fma(body) / unroll,
                    "loop_unroll": unroll,
                    "overhead_cycles": round(ov, 3),
                    "overhead_per": k.overhead_per,
                    "peak_flops_per_cycle": round(peaks[core], 4),
                    "sources_sha256": sha,
                    "sources": paths,
                })
    return rows


def table(rows: list[dict], peaks: dict[str, float]) -> str:
    cpu = "llvm-mca models (LLVM 14), not a measured CPU"
    out = [f"NEON microkernels under llvm-mca ({cpu}); {CXX} {' '.join(CXXFLAGS)} -mcpu=<core>",
           "memory behaviour is outside llvm-mca's model (every load an L1 hit)", ""]
    for core in peaks:
        variant, defs = VARIANT.get(core, ("neon", []))
        out.append(f"{core} (variant {variant}{', ' + ' '.join(defs) if defs else ''}): FMA peak {peaks[core]:.2f} "
                   "FLOP/cycle (16 independent 128-bit FMLA)")
        hdr = f"{'kernel':<34} {'kinds':<44} {'cy/iter':>7} {'FLOP/it':>7} {'%peak':>6} {'ovh cy':>7}  bottleneck"
        out += [hdr, "-" * len(hdr)]
        seen = {}
        for r in rows:
            if r["core"] == core:
                seen.setdefault(r["kernel"], []).append(r)
        for name, rs in seen.items():
            r = rs[0]
            kinds = ",".join(x["kind"] for x in rs)
            out.append(f"{name:<34} {kinds:<44} {r['cycles_per_iter']:>7.2f} {r['flops_per_iter']:>7.0f} "
                       f"{100 * r['peak_fraction']:>5.1f}% {r['overhead_cycles']:>7.1f}  {r['bottleneck']}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the per-(core, kernel, kind) list here (atomic)")
    ap.add_argument("--cores", default=",".join(CORES), help="comma-separated llvm-mca CPU models")
    ap.add_argument("--show-asm", help="print the inner loop, overhead block and llvm-mca report of this kernel")
    a = ap.parse_args(argv)
    for tool in (CXX, "llvm-mca"):
        if not shutil.which(tool):
            print(f"missing {tool}: apt-get install g++-aarch64-linux-gnu llvm", file=sys.stderr)
            return 3
    cores = tuple(c.strip() for c in a.cores.split(",") if c.strip())
    rows, peaks = measure(cores, a.show_asm)
    print(table(rows, peaks))
    if a.json:
        path = Path(a.json)
        fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=path.name + ".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(rows, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
