"""Writes depthwise_a53.h: the depthwise 3x3 loops (stride 1 row pairs, stride 2 rows) for in-order
AArch64 cores.

    python kernels/src/micro/gen_depthwise_a53.py [--check]

(--check: exit 1 when depthwise_a53.h differs from what this script writes.)

The method.  Output rows y, y + 1 of one channel need input rows y - 1 .. y + 2 (m_r, r = 0..3).
Per column vector c of 4 pixels and output row o the kernel keeps three sums over the kernel rows,
one per kernel column:

    L_o(c) = sum_ky k[ky][0] m_{o+ky}(c),  M_o(c) = sum_ky k[ky][1] m_{o+ky}(c),  R_o(c) = ... k[ky][2]

and the output is out_o(c) = M_o(c) + bias + ext(L_o(c-1), L_o(c)) + ext(R_o(c), R_o(c+1)): a side
tap's products are shifted by one lane once per output vector (EXT), not once per input row.  A
trip covers two column vectors (A = 2t, B = 2t + 1): eight aligned loads, the 36 multiply-adds
as 12 chains (an FMUL then two by-lane FMLAs each: the 9 weights live in the lanes of v0-v2), and
the finishing of columns 2t - 1 and 2t, which needs the previous trip's L(B), R(B) and the partial
sum P(2t - 1) = M + bias + ext(L, L).  L(B), R(B) alternate between two register sets by trip
parity, so the loop body is two trips and nothing is copied.

Why this shape: llvm-mca's Cortex-A53 model issues in order, at most two instructions per cycle,
and never lets an instruction write back before an earlier one: an FMLA (latency 10) stalls every
later load (4) or FP add (6) until it is nearly done.  So each trip runs in phases: loads and
stores (with the pointer adds paired in), then the FMULs, then the 24 FMLAs (12 independent
chains, so no FMLA waits on another), then the finishing EXT/FADD/FMAX, ordered by a list
scheduler (longest path first) on that model.  Stride 2 (``s2_*`` below) reads its three input rows
with LD4 and writes the even and odd outputs with ST2; its method is described there.  Registers
of stride 1: weights v0-v2, bias v3, 0 v4, 6 v5,
data v6-v13 (temporaries while finishing), chains v14-v29, partial sums v30-v31.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

OUT = Path(__file__).with_name("depthwise_a53.h")
LAT = 6  # FP ALU latency of the A53 model (EXT, FADD, FMUL, FMAX, FMIN)
FMLA_LAT = 10

W = ("v0", "v1", "v2")
BIAS, ZERO, SIX = "v3", "v4", "v5"
D = tuple(f"v{6 + i}" for i in range(8))  # m_r(A) = D[r], m_r(B) = D[4 + r]
SETS = {0: ("v22", "v23", "v24", "v25"), 1: ("v26", "v27", "v28", "v29")}  # L_B, R_B per row, by parity
OUTS = (D[4], D[5], D[6], D[7])  # row 0: out(2t-1), out(2t); row 1: the same (stored next trip)
TMPS = (D[0], D[1], D[2], D[3])


def wl(i: int) -> str:
    return f"{W[i // 4]}.s[{i % 4}]"


def chain_a(o: int, kx: int) -> str:
    return f"v{14 + 3 * o + kx}"


def mb(o: int) -> str:
    return f"v{20 + o}"


def lb(p: int, o: int) -> str:
    return SETS[p][2 * o]


def rb(p: int, o: int) -> str:
    return SETS[p][2 * o + 1]


def pc(o: int) -> str:
    return f"v{30 + o}"


def chain(p: int, o: int, c: int, kx: int) -> str:
    return chain_a(o, kx) if c == 0 else (lb(p, o), mb(o), rb(p, o))[kx]


def data(r: int, c: int) -> str:
    return D[4 * c + r]


def q(v: str) -> str:
    return "q" + v[1:]


def regs(ins: str) -> tuple[str, list[str]]:
    """(destination, sources) vector registers of one FP instruction (the scheduler's and the FMLAs')."""
    op = ins.split()[0]
    vs = ["v" + x for x in re.findall(r"\bv(\d+)\b", ins)]
    return vs[0], (vs if op == "fmla" else vs[1:])


def ldst(stores: bool, sub: bool) -> list[str]:
    """The trip's loads (column A first: the FMULs start there), the previous trip's stores, and the
    pointer updates, each placed after the last access through its register (pairs with a load)."""
    mem = [f"ldr {q(data(r, 0))}, [%[r{r}]]" for r in range(4)]
    if stores:  # a pair store writes 32 bytes in one load/store-pipe cycle on the A53 model
        mem += [f"stp {q(OUTS[0])}, {q(OUTS[1])}, [%[o0]]", f"stp {q(OUTS[2])}, {q(OUTS[3])}, [%[o1]]"]
    mem += [f"ldr {q(data(r, 1))}, [%[r{r}], #16]" for r in range(4)]
    alu = [f"add %[r{r}], %[r{r}], #32" for r in range(4)]
    if stores:
        alu += ["add %[o0], %[o0], #32", "add %[o1], %[o1], #32"]
    if sub:
        alu.append("subs %[n], %[n], #1")
    res = []
    for i, x in enumerate(mem):
        res.append(x)
        for a in list(alu):
            reg = a.split("%[")[1].split("]")[0]
            if all(f"%[{reg}]" not in y for y in mem[i + 1:]):
                res.append(a)
                alu.remove(a)
                break
    return res + alu


def fmuls(p: int) -> list[str]:
    return [f"fmul {chain(p, o, c, kx)}.4s, {data(o, c)}.4s, {wl(kx)}"
            for c in (0, 1) for o in (0, 1) for kx in (2, 0, 1)]


ORDER = [(0, o, kx) for kx in (2, 0, 1) for o in (0, 1)] + [(1, o, kx) for kx in (1, 0, 2) for o in (0, 1)]


def fmlas(p: int) -> list[str]:
    return [f"fmla {chain(p, o, c, kx)}.4s, {data(o + ky, c)}.4s, {wl(3 * ky + kx)}"
            for ky in (1, 2) for (c, o, kx) in ORDER]


def finish_ops(p: int, outputs: bool, act: str) -> list[str]:
    """Per output row, in dependency order: out(2t-1), out(2t) (outputs), the new partial sum."""
    prev = 1 - p
    ops = []
    for o in (0, 1):
        t1, t3 = TMPS[2 * o], TMPS[2 * o + 1]
        o1, o2 = OUTS[2 * o], OUTS[2 * o + 1]
        la, ma, ra = chain_a(o, 0), chain_a(o, 1), chain_a(o, 2)
        if outputs:
            ops += [f"ext {o1}.16b, {rb(prev, o)}.16b, {ra}.16b, #4",   # R(2t-1), R(2t) -> right taps of 2t-1
                    f"ext {t1}.16b, {lb(prev, o)}.16b, {la}.16b, #12",  # L(2t-1), L(2t) -> left taps of 2t
                    f"ext {o2}.16b, {ra}.16b, {rb(p, o)}.16b, #4",      # R(2t), R(2t+1) -> right taps of 2t
                    f"fadd {o1}.4s, {o1}.4s, {pc(o)}.4s",
                    f"fadd {ma}.4s, {ma}.4s, {t1}.4s",
                    f"fadd {o2}.4s, {o2}.4s, {BIAS}.4s"]
        ops += [f"ext {t3}.16b, {la}.16b, {lb(p, o)}.16b, #12",         # L(2t), L(2t+1) -> left taps of 2t+1
                f"fadd {mb(o)}.4s, {mb(o)}.4s, {BIAS}.4s",
                f"fadd {pc(o)}.4s, {mb(o)}.4s, {t3}.4s"]
        if outputs:
            ops.append(f"fadd {o2}.4s, {o2}.4s, {ma}.4s")
            ops += activation(o1, act) + activation(o2, act)
    return ops


def activation(x: str, act: str) -> list[str]:
    """The ReLU-class epilogue of register x: none, relu (max 0) or relu6 (then min 6)."""
    return ([f"fmax {x}.4s, {x}.4s, {ZERO}.4s"] if act in ("relu", "relu6") else []) + \
        ([f"fmin {x}.4s, {x}.4s, {SIX}.4s"] if act == "relu6" else [])


# Weights by lane (v0-v2), bias (v3), 0 (v4), 6 (v5): loaded once per call.
SETUP = ["ldr q0, [%[w]]", "ldr q1, [%[w], #16]", "ldr s2, [%[w], #32]", "ld1r {v3.4s}, [%[b]]",
         "movi v4.4s, #0", "fmov v5.4s, #6.0"]


def schedule(ops: list[str], ready: dict[str, int]) -> list[str]:
    """Orders FP-ALU ops (one per cycle, latency LAT) keeping every register dependence: at each
    cycle the ready op with the longest path to the end, else the one ready first.  ``ready``: cycle
    (relative to the first op) at which a register written before ``ops`` can be read."""
    n = len(ops)
    info = [regs(x) for x in ops]
    preds: list[set[int]] = [set() for _ in ops]
    raw: list[set[int]] = [set() for _ in ops]
    for i in range(n):
        di, si = info[i]
        for j in range(i):
            dj, sj = info[j]
            if dj and dj in si and all(info[k][0] != dj for k in range(j + 1, i)):
                raw[i].add(j)
                preds[i].add(j)
            if di and (di in sj or di == dj):
                preds[i].add(j)
    height = [0] * n
    for i in reversed(range(n)):
        height[i] = LAT + max([height[k] for k in range(i + 1, n) if i in raw[k]] + [0])
    written: dict[int, int] = {}

    def ready_at(i: int) -> int:
        r = -99
        for j in raw[i]:
            r = max(r, written[j])
        for x in info[i][1]:
            if not any(info[j][0] == x for j in raw[i]):
                r = max(r, ready.get(x, -99))
        return r

    done: set[int] = set()
    left = list(range(n))
    order, t = [], 0
    while left:
        cands = [i for i in left if preds[i] <= done]
        now = [i for i in cands if ready_at(i) <= t]
        i = max(now, key=lambda i: (height[i], -i)) if now else min(cands, key=lambda i: (ready_at(i), -height[i]))
        t = max(t, ready_at(i)) + 1
        written[i] = t - 1 + LAT
        done.add(i)
        left.remove(i)
        order.append(ops[i])
    return order


def trip(p: int, stores: bool, outputs: bool, sub: bool, act: str) -> list[str]:
    fm = fmlas(p)
    # FMLA i issues at cycle i of its block; the finishing starts 4 cycles after the block (the
    # A53 model's in-order write-back behind the last FMLA).
    ready = {regs(x)[0]: i + FMLA_LAT - (len(fm) + 4) for i, x in enumerate(fm)}
    return ldst(stores, sub) + fmuls(p) + fm + schedule(finish_ops(p, outputs, act), ready)


def program(act: str) -> list[str]:
    """Trips 0 (no outputs) and 1 (outputs of columns 1, 2 kept for the next trip's stores), then
    n pairs of trips, then one more trip when e != 0, then the last stores."""
    return (SETUP + trip(0, False, False, False, act) + trip(1, False, True, False, act)
            + ["cbz %[n], 2f", "1:"] + trip(0, True, True, False, act) + trip(1, True, True, True, act)
            + ["b.ne 1b", "2:", "cbz %[e], 3f"] + trip(0, True, True, False, act)
            + ["3:", f"stp {q(OUTS[0])}, {q(OUTS[1])}, [%[o0]]", f"stp {q(OUTS[2])}, {q(OUTS[3])}, [%[o1]]"])


# ---- Stride 2: one output row, trips of 8 outputs (two vectors: the even and the odd columns) ----
# LD4 of 16 input columns 16t .. 16t + 15 gives lanes j = 0..3 of columns 16t + 4i + j.  Output 8t + 2i
# (even) reads columns 16t + 4i - 1 (lane 3 one step left), 16t + 4i, 16t + 4i + 1; output 8t + 2i + 1
# (odd) reads lanes 1, 2, 3.  Six chains per trip over the 3 kernel rows: L (k0 on lane 3, shifted by
# one vector lane when finished), EM (k1, lane 0), ER (k2, lane 1); OL (k0, lane 1), OM (k1, lane 2),
# OR (k2, lane 3).  ST2 writes the even and odd vectors back interleaved.  The chains alternate
# between two register sets by trip parity: trip t finishes trip t - 1 while it starts its own.
S2_DATA = lambda r, j: f"v{6 + 4 * r + j}"  # noqa: E731  row r (0..2), LD4 lane j
S2_SETS = {0: ("v18", "v19", "v20", "v21", "v22", "v23"), 1: ("v24", "v25", "v26", "v27", "v28", "v29")}
S2_CHAINS = (("L", 0, 3), ("EM", 1, 0), ("ER", 2, 1), ("OL", 0, 1), ("OM", 1, 2), ("OR", 2, 3))  # name, kx, lane
S2_E, S2_O = "v30", "v31"  # the finished even / odd vectors (ST2 needs consecutive registers)


def s2_chain(p: int, name: str) -> str:
    return S2_SETS[p][[c[0] for c in S2_CHAINS].index(name)]


def s2_ldst(store: bool, sub: bool) -> list[str]:
    """LD4 of the trip's three rows, then the previous outputs' ST2 (no post-index: on the A53 model a
    post-indexed LD4 / ST2 holds the next access back), the pointer adds after them."""
    ins = [f"ld4 {{{', '.join(f'{S2_DATA(r, j)}.4s' for j in range(4))}}}, [%[r{r}]]" for r in range(3)]
    if store:
        ins += [f"st2 {{{S2_E}.4s, {S2_O}.4s}}, [%[o]]", "add %[o], %[o], #32"]
    ins += [f"add %[r{r}], %[r{r}], #64" for r in range(3)]
    if sub:
        ins.append("subs %[n], %[n], #1")
    return ins


def s2_finish(p: int, act: str) -> list[str]:
    """Finishes the previous trip (parity 1 - p); this parity's L still holds the trip before it."""
    q = 1 - p
    ops = [f"ext {S2_E}.16b, {s2_chain(p, 'L')}.16b, {s2_chain(q, 'L')}.16b, #12",
           f"fadd {S2_O}.4s, {s2_chain(q, 'OL')}.4s, {s2_chain(q, 'OM')}.4s",
           f"fadd {S2_E}.4s, {S2_E}.4s, {s2_chain(q, 'EM')}.4s",
           f"fadd {S2_O}.4s, {S2_O}.4s, {s2_chain(q, 'OR')}.4s",
           f"fadd {S2_E}.4s, {S2_E}.4s, {s2_chain(q, 'ER')}.4s",
           f"fadd {S2_O}.4s, {S2_O}.4s, {BIAS}.4s",
           f"fadd {S2_E}.4s, {S2_E}.4s, {BIAS}.4s"]
    return ops + activation(S2_E, act) + activation(S2_O, act)


def s2_trip(p: int, store: bool, finish: bool, sub: bool, act: str) -> list[str]:
    fmul = [f"fmul {s2_chain(p, n)}.4s, {S2_DATA(0, j)}.4s, {wl(kx)}" for n, kx, j in S2_CHAINS]
    fmla = [f"fmla {s2_chain(p, n)}.4s, {S2_DATA(ky, j)}.4s, {wl(3 * ky + kx)}"
            for ky in (1, 2) for n, kx, j in S2_CHAINS]
    return s2_ldst(store, sub) + schedule((s2_finish(p, act) if finish else []) + fmul, {}) + fmla


def s2_program(act: str) -> list[str]:
    """Trips 0 and 1 (nothing stored yet), n pairs of trips, one more trip when e != 0, then the last two
    stores around the finishing of the last trip.  The L before trip 0 is zero (column -1: padding)."""
    setup = SETUP + [f"movi {s2_chain(1, 'L')}.4s, #0"]
    store = [f"st2 {{{S2_E}.4s, {S2_O}.4s}}, [%[o]]", "add %[o], %[o], #32"]
    return (setup + s2_trip(0, False, False, False, act) + s2_trip(1, False, True, False, act)
            + ["cbz %[n], 2f", "1:"] + s2_trip(0, True, True, False, act) + s2_trip(1, True, True, True, act)
            + ["b.ne 1b", "2:", "cbz %[e], 3f"] + s2_trip(0, True, True, False, act)
            + store + schedule(s2_finish(1, act), {}) + store + ["b 4f", "3:"]
            + store + schedule(s2_finish(0, act), {}) + store + ["4:"])


HEADER = '''\
// Generated by gen_depthwise_a53.py (the method and the schedule are described there); do not edit.
// Depthwise 3x3 for in-order AArch64 cores (Cortex-A53), see docs/kernels.md.  Stride 1: inner
// column vectors of one output row pair, llvm-mca cortex-a53 37 cycles per column vector (18 FMAs)
// against 98 for the compiled loop.  Stride 2: one inner output row, 30 cycles per output vector (9
// FMAs) against 77.
#pragma once
#if defined(JCW_TUNE_IN_ORDER) && defined(__aarch64__)
#include <cstdint>

namespace jcw {
namespace {

// Rows r0..r3 = input rows y - 1 .. y + 2 at column 0; o0, o1 = output rows y, y + 1 at column 4.
// With T = 2 + 2 n + e trips (e in {0, 1}) it reads columns [0, 8 T) of the four rows and writes
// columns [4, 8 T - 4) of both output rows: out = act(conv + bias), act = None (A = 0), Relu (1)
// or Relu6 (2).  w: the channel's 9 weights, b: its bias.
template <int A>
inline void a53_dw3_pairs(const float* r0, const float* r1, const float* r2, const float* r3, float* o0, float* o1,
                          const float* w, const float* b, int64_t n, int64_t e) {
    static_assert(A >= 0 && A <= 2, "A: 0 None, 1 Relu, 2 Relu6");
'''


S2_FUNCTION = '''
// Depthwise 3x3 stride 2, one output row y of an inner row (input rows 2y - 1 .. 2y + 1 all inside
// the image): r0..r2 = those input rows at column 0, o = output row y at column 0.  With T = 2 + 2 n + e
// trips (e in {0, 1}) it reads columns [0, 16 T) of the three rows and writes outputs [0, 8 T): out =
// act(conv + bias), act as above; the column left of 0 is the zero padding.
template <int A>
inline void a53_dw3s2_row(const float* r0, const float* r1, const float* r2, float* o, const float* w, const float* b,
                          int64_t n, int64_t e) {
    static_assert(A >= 0 && A <= 2, "A: 0 None, 1 Relu, 2 Relu6");
'''


def asm_blocks(program, outputs: str, inputs: str) -> str:
    """The three activation instances of one function body (if constexpr on A)."""
    out = []
    for a, act in enumerate(("none", "relu", "relu6")):
        head = ("if constexpr (A == 0) {", "} else if constexpr (A == 1) {", "} else {")[a]
        out.append(f"    {head}\n        asm volatile(\n")
        for ins in program(act):
            out.append(f'            "{ins}\\n\\t"\n')
        out.append(f"            : {outputs}\n")
        out.append(f"            : {inputs}\n")
        regs_ = ", ".join(f'"v{i}"' for i in range(32))
        out.append(f'            : {regs_}, "cc", "memory");\n')
    out.append("    }\n}\n")
    return "".join(out)


def emit() -> str:
    return (HEADER
            + asm_blocks(program, '[r0] "+r"(r0), [r1] "+r"(r1), [r2] "+r"(r2), [r3] "+r"(r3), [o0] "+r"(o0), '
                                  '[o1] "+r"(o1), [n] "+r"(n)', '[w] "r"(w), [b] "r"(b), [e] "r"(e)')
            + S2_FUNCTION
            + asm_blocks(s2_program, '[r0] "+r"(r0), [r1] "+r"(r1), [r2] "+r"(r2), [o] "+r"(o), [n] "+r"(n)',
                         '[w] "r"(w), [b] "r"(b), [e] "r"(e)')
            + "\n}  // namespace\n}  // namespace jcw\n#endif\n")


def main(argv: list[str]) -> int:
    text = emit()
    if "--check" in argv:
        same = OUT.exists() and OUT.read_text() == text
        print(f"{OUT.name}: {'up to date' if same else 'differs from the generator'}")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
