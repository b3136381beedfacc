// 4x1 block-sparse register tile: 4 output channels x NV vectors of L pixels, one kept block
// (4 weights at one input position) per step; sparse and dense packings run the same loop.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "../simd.h"
#include "geometry.h"

namespace jcw {
// Internal linkage: every kernel-variant translation unit (compiled with its own ISA flags, see
// CMakeLists.txt) gets its own copy, so no instance compiled for one ISA is shared with another.
namespace {

using simd::vec;

#if defined(JCW_TUNE_IN_ORDER) && defined(__aarch64__)
// The 4x1-block row loop for in-order AArch64 cores (Cortex-A53), n >= 1 blocks: acc[i][v] +=
// w[4b + i] * in[off[b] + 4v ..] for the row's blocks b.  Two blocks per trip: all ten vector
// loads of both blocks (inputs v16-v23, weights v24/v25, used by lane) and the next trip's two
// addresses (offsets loaded one trip ahead) issue before the 32 FMLAs.  An in-order core stalls
// a load issued behind an FMLA in flight (llvm-mca's Cortex-A53 model: until the FMLA
// completes), so loads and FMLAs are grouped, and the one stall per trip is shared by two blocks.
// Written in assembly because the compilers' schedules interleave the loads with the FMLAs
// (llvm-mca cortex-a53: 34 cycles per block before, see docs/kernels.md).  Reads up to two
// offsets past the row (make_offsets pads two).  The accumulators live in v0-v15 inside the loop,
// loaded from and stored back to acc once per row.
inline void a53_blocks(vec<4> (&acc)[4][4], const float* in, const int32_t* off, const float* w, int n) {
    const float *pn, *pnn;
    int64_t t, t2;
    asm volatile(
        "ld1 {v0.4s, v1.4s, v2.4s, v3.4s}, [%[acc]]\n\t"
        "add %[t], %[acc], #64\n\t"
        "ld1 {v4.4s, v5.4s, v6.4s, v7.4s}, [%[t]], #64\n\t"
        "ld1 {v8.4s, v9.4s, v10.4s, v11.4s}, [%[t]], #64\n\t"
        "ld1 {v12.4s, v13.4s, v14.4s, v15.4s}, [%[t]]\n\t"
        "tbz %w[n], #0, 3f\n\t"  // odd count: one block alone first
        "ldrsw %[t], [%[off]]\n\t"
        "add %[pn], %[in], %[t], lsl #2\n\t"
        "ldr q16, [%[pn]]\n\t"
        "ldr q17, [%[pn], #16]\n\t"
        "ldr q18, [%[pn], #32]\n\t"
        "ldr q19, [%[pn], #48]\n\t"
        "ldr q24, [%[w]]\n\t"
        "add %[w], %[w], #16\n\t"
        "add %[off], %[off], #4\n\t"
        "sub %w[n], %w[n], #1\n\t"
        "fmla v0.4s, v16.4s, v24.s[0]\n\t"
        "fmla v1.4s, v17.4s, v24.s[0]\n\t"
        "fmla v2.4s, v18.4s, v24.s[0]\n\t"
        "fmla v3.4s, v19.4s, v24.s[0]\n\t"
        "fmla v4.4s, v16.4s, v24.s[1]\n\t"
        "fmla v5.4s, v17.4s, v24.s[1]\n\t"
        "fmla v6.4s, v18.4s, v24.s[1]\n\t"
        "fmla v7.4s, v19.4s, v24.s[1]\n\t"
        "fmla v8.4s, v16.4s, v24.s[2]\n\t"
        "fmla v9.4s, v17.4s, v24.s[2]\n\t"
        "fmla v10.4s, v18.4s, v24.s[2]\n\t"
        "fmla v11.4s, v19.4s, v24.s[2]\n\t"
        "fmla v12.4s, v16.4s, v24.s[3]\n\t"
        "fmla v13.4s, v17.4s, v24.s[3]\n\t"
        "fmla v14.4s, v18.4s, v24.s[3]\n\t"
        "fmla v15.4s, v19.4s, v24.s[3]\n\t"
        "3:\n\t"
        "cbz %w[n], 2f\n\t"
        "ldrsw %[t], [%[off]]\n\t"
        "ldrsw %[t2], [%[off], #4]\n\t"
        "add %[pn], %[in], %[t], lsl #2\n\t"
        "add %[pnn], %[in], %[t2], lsl #2\n\t"
        "1:\n\t"
        "ldr q16, [%[pn]]\n\t"
        "ldr q17, [%[pn], #16]\n\t"
        "ldr q18, [%[pn], #32]\n\t"
        "ldr q19, [%[pn], #48]\n\t"
        "ldr q24, [%[w]]\n\t"
        "ldr q20, [%[pnn]]\n\t"
        "ldr q21, [%[pnn], #16]\n\t"
        "ldr q22, [%[pnn], #32]\n\t"
        "ldr q23, [%[pnn], #48]\n\t"
        "ldr q25, [%[w], #16]\n\t"
        "ldrsw %[t], [%[off], #8]\n\t"
        "ldrsw %[t2], [%[off], #12]\n\t"
        "add %[w], %[w], #32\n\t"
        "add %[off], %[off], #8\n\t"
        "add %[pn], %[in], %[t], lsl #2\n\t"
        "add %[pnn], %[in], %[t2], lsl #2\n\t"
        "subs %w[n], %w[n], #2\n\t"
        "fmla v0.4s, v16.4s, v24.s[0]\n\t"
        "fmla v1.4s, v17.4s, v24.s[0]\n\t"
        "fmla v2.4s, v18.4s, v24.s[0]\n\t"
        "fmla v3.4s, v19.4s, v24.s[0]\n\t"
        "fmla v4.4s, v16.4s, v24.s[1]\n\t"
        "fmla v5.4s, v17.4s, v24.s[1]\n\t"
        "fmla v6.4s, v18.4s, v24.s[1]\n\t"
        "fmla v7.4s, v19.4s, v24.s[1]\n\t"
        "fmla v8.4s, v16.4s, v24.s[2]\n\t"
        "fmla v9.4s, v17.4s, v24.s[2]\n\t"
        "fmla v10.4s, v18.4s, v24.s[2]\n\t"
        "fmla v11.4s, v19.4s, v24.s[2]\n\t"
        "fmla v12.4s, v16.4s, v24.s[3]\n\t"
        "fmla v13.4s, v17.4s, v24.s[3]\n\t"
        "fmla v14.4s, v18.4s, v24.s[3]\n\t"
        "fmla v15.4s, v19.4s, v24.s[3]\n\t"
        "fmla v0.4s, v20.4s, v25.s[0]\n\t"
        "fmla v1.4s, v21.4s, v25.s[0]\n\t"
        "fmla v2.4s, v22.4s, v25.s[0]\n\t"
        "fmla v3.4s, v23.4s, v25.s[0]\n\t"
        "fmla v4.4s, v20.4s, v25.s[1]\n\t"
        "fmla v5.4s, v21.4s, v25.s[1]\n\t"
        "fmla v6.4s, v22.4s, v25.s[1]\n\t"
        "fmla v7.4s, v23.4s, v25.s[1]\n\t"
        "fmla v8.4s, v20.4s, v25.s[2]\n\t"
        "fmla v9.4s, v21.4s, v25.s[2]\n\t"
        "fmla v10.4s, v22.4s, v25.s[2]\n\t"
        "fmla v11.4s, v23.4s, v25.s[2]\n\t"
        "fmla v12.4s, v20.4s, v25.s[3]\n\t"
        "fmla v13.4s, v21.4s, v25.s[3]\n\t"
        "fmla v14.4s, v22.4s, v25.s[3]\n\t"
        "fmla v15.4s, v23.4s, v25.s[3]\n\t"
        "b.ne 1b\n\t"
        "2:\n\t"
        "st1 {v0.4s, v1.4s, v2.4s, v3.4s}, [%[acc]]\n\t"
        "add %[t], %[acc], #64\n\t"
        "st1 {v4.4s, v5.4s, v6.4s, v7.4s}, [%[t]], #64\n\t"
        "st1 {v8.4s, v9.4s, v10.4s, v11.4s}, [%[t]], #64\n\t"
        "st1 {v12.4s, v13.4s, v14.4s, v15.4s}, [%[t]]\n\t"
        : [w] "+r"(w), [off] "+r"(off), [n] "+r"(n), [pn] "=&r"(pn), [pnn] "=&r"(pnn), [t] "=&r"(t), [t2] "=&r"(t2)
        : [in] "r"(in), [acc] "r"(&acc[0][0])
        : "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11", "v12", "v13", "v14", "v15", "v16",
          "v17", "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25", "cc", "memory");
}
#endif

// Segments of the W-lane tile at virtual position q (lanes from `first` on) that map to valid
// output pixels: (tile lane j, output index o, length n).
template <int W>
struct TileSegments {
    int j[W], o[W], n[W], count = 0;
    TileSegments(const Geometry& g, int q, int first) {
        j[0] = o[0] = n[0] = 0;
        if (g.wv == g.wo) {  // no discarded columns: the tile is one run of outputs
            j[0] = first, o[0] = q + first, n[0] = std::max(0, std::min(W, g.qend - q) - first), count = 1;
        }
        for (int k = count ? W : first; k < W;) {
            const int qq = q + k, y = qq / g.wv, x = qq - y * g.wv;
            if (y >= g.ho) break;
            if (x >= g.wo) {
                k += g.wv - x;
                continue;
            }
            const int len = std::min(W - k, g.wo - x);
            j[count] = k, o[count] = y * g.wo + x, n[count] = len, ++count;
            k += len;
        }
    }
    bool whole() const { return count == 1 && n[0] == W; }  // one contiguous run of W outputs
};

// Output channel oc of the tile: its NV accumulators (+ residual, activation) stored to the
// tile's segments; a whole tile (`whole`: s.whole(), its outputs from `start` = s.o[0]) straight
// from registers, prefetching the same lines of the next tile for writing.  Both are read once per
// tile by the caller: the stores (memcpy) may alias `s` for the compiler.
template <int L, int NV, bool M>
__attribute__((always_inline)) inline void store_tile_row(const vec<L>* acc, const TileSegments<L * NV>& s, bool whole,
                                                          int start, int hw, size_t oc, float* out,
                                                          const float* residual, Act act) {
    constexpr int W = L * NV;
    if (whole) {
        const size_t o = oc * hw + start;
        for (int v = 0; v < NV; ++v) {
            __builtin_prefetch(out + o + W + v * L, 1);
            vec<L> y = acc[v];
            if (residual) y += simd::load<L>(residual + o + v * L);
            simd::store<L>(out + o + v * L, simd::activate<L, M>(y, act));
        }
        return;
    }
    float* o = out + oc * hw;
    const float* res = residual ? residual + oc * hw : nullptr;
#if defined(__AVX512F__)
    if constexpr (L == 16) {
        // Each vector straight from its register into the segments it overlaps, masked: tile lane
        // t of segment k goes to o + s.o[k] + t - s.j[k].  Through a tile buffer, the unaligned
        // reloads of the buffer wait on store forwarding; with 58-float virtual rows (3x3 @56)
        // nearly every tile has two or three segments.  ("fifth pass": mobilenet_v2's stem 10 %.)
        JCW_UNROLL for (int v = 0; v < NV; ++v) {
            const vec<L> y = res ? acc[v] : simd::activate<L, M>(acc[v], act);
            for (int k = 0; k < s.count; ++k) {
                const int a = std::max(s.j[k], v * L), b = std::min(s.j[k] + s.n[k], (v + 1) * L);
                if (a >= b) continue;
                const std::ptrdiff_t at = s.o[k] - s.j[k] + v * L;  // where lane 0 of vector v would go
                vec<L> z = y;
                if (res) z = simd::activate<L, M>(z + simd::load_lanes16(res, at, a - v * L, b - v * L), act);
                simd::store_lanes16(o, at, z, a - v * L, b - v * L);
            }
        }
        return;
    }
#endif
    float tmp[W];
    for (int v = 0; v < NV; ++v) simd::store<L>(tmp + v * L, acc[v]);
    for (int k = 0; k < s.count; ++k)
        simd::emit<L, M>(tmp + s.j[k], res ? res + s.o[k] : nullptr, o + s.o[k], s.n[k], act);
}

// Positions that ride along with a tile (q, q + 1, ..): a tile of whole vectors computes the
// X positions right after it channel-vectorised (X <= 4 on the 4x1 tile, <= 2 on the dense tile),
// one R-lane accumulator per position over its R output channels (their weights of one input
// position are contiguous in both packings).  A 7x7 image (49 positions) then takes one pass over
// the weights, a tile of 3 vectors plus one position, instead of a 4-vector tile that computes 64
// or a second 1-vector pass; a 14x14 one 3 tiles, the last carrying 4.
template <int R, bool M, int X>
__attribute__((always_inline)) inline void store_ride_along(const vec<R>* ax, const Geometry& g, int q, int nrow,
                                                            size_t oc0, float* out, const float* residual, Act act) {
    for (int e = 0; e < X; ++e) {
        const int qq = q + e, y = qq / g.wv, x = qq - y * g.wv;
        if (y >= g.ho || x >= g.wo) continue;  // a discarded column
        const size_t o = static_cast<size_t>(y) * g.wo + x;
        float v[R];
        simd::store<R>(v, ax[e]);
        for (int i = 0; i < nrow; ++i) {
            const size_t at = (oc0 + i) * g.hw + o;
            simd::emit<1, M>(v + i, residual ? residual + at : nullptr, out + at, 1, act);
        }
    }
}

// Most positions that ride along with a whole 4x1 tile: 16 + 4 + 1 + 4 + 2 of AVX-512's 32 registers.
constexpr int kRideAlong4x1 = 4;

// Tile of `NV` vectors of L pixels starting at virtual position q, `rows` out of 4 stored.
// Stores prefetch the same output lines of the next tile for writing; PF also prefetches its input.
// M: any activation, else None / ReLU / ReLU6 only (simd::activate).
// X > 0: the X positions after the tile ride along (store_ride_along).
template <int L, int NV, bool M, bool PF = false, int X = 0>
inline void tile_rows(const Geometry& g, int q, int first, int r0, int r1, const float* packed,
                      const int32_t* row_start, const int32_t* off, int out_ch, float* out, const float* residual,
                      Act act) {
    constexpr int W = L * NV;
    const TileSegments<W> segs(g, q, first);
    const bool whole = segs.whole();
    const int start = segs.o[0];
    const float* in = g.base + q;
    for (int r = r0; r < r1; ++r) {
        const float* w = packed + 4 * (static_cast<size_t>(row_start[r]) + r);
        vec<L> acc[4][NV];
        for (int i = 0; i < 4; ++i)
            for (int v = 0; v < NV; ++v) acc[i][v] = simd::splat<L>(w[i]);
        vec<4> ax[X > 0 ? X : 1];
        for (int e = 0; e < X; ++e) ax[e] = simd::load<4>(w);
        w += 4;
        // Next tile's input: one of its NV lines per block, a different one per row.
        const int pf = W + (r % NV) * L;
#if defined(JCW_TUNE_IN_ORDER) && defined(__aarch64__)
        if constexpr (L == 4 && NV == 4 && X == 0) {
            if (row_start[r + 1] > row_start[r])
                a53_blocks(acc, in, off + row_start[r], w, row_start[r + 1] - row_start[r]);
        } else
#endif
        for (int b = row_start[r], e = row_start[r + 1]; b < e; ++b, w += 4) {
            const float* p = in + off[b];
            if constexpr (PF) __builtin_prefetch(p + pf);
            vec<L> x[NV];
            for (int v = 0; v < NV; ++v) x[v] = simd::load<L>(p + v * L);
            for (int i = 0; i < 4; ++i)
                for (int v = 0; v < NV; ++v) acc[i][v] += w[i] * x[v];
            if constexpr (X > 0) {
                const vec<4> wr = simd::load<4>(w);
                for (int e = 0; e < X; ++e) ax[e] += wr * p[W + e];
            }
        }
        const int nrow = std::min(4, out_ch - 4 * r);
        JCW_UNROLL for (int i = 0; i < 4; ++i) if (i < nrow)
            store_tile_row<L, NV, M>(acc[i], segs, whole, start, g.hw, 4 * static_cast<size_t>(r) + i, out, residual, act);
        if constexpr (X > 0) store_ride_along<4, M, X>(ax, g, q + W, nrow, 4 * static_cast<size_t>(r), out, residual, act);
    }
}

// All tiles of virtual range [q0, q1) for block rows [r0, r1); needs g.qend >= L.  rows_outer:
// finish one block row over all tiles before the next (weights stay in cache: small images);
// else run all rows per tile (the input tile stays in cache: large images).
template <int L, int NV, bool M>
void conv_range(const Geometry& g, int q0, int q1, int r0, int r1, bool rows_outer, const float* packed,
                const int32_t* row_start, const int32_t* off, int out_ch, float* out, const float* residual,
                Act act) {
    if (rows_outer) {  // chunks of block rows whose weights fit in L1, all tiles per chunk
        constexpr int32_t kChunkBlocks = 1536;  // 1536 * (16 + 4) bytes = 30 KiB
        for (int r = r0; r < r1;) {
            int e = r + 1;
            while (e < r1 && row_start[e + 1] - row_start[r] <= kChunkBlocks) ++e;
            conv_range<L, NV, M>(g, q0, q1, r, e, false, packed, row_start, off, out_ch, out, residual, act);
            r = e;
        }
        return;
    }
    // With 16 lanes, 1-4 positions past the last whole tile ride along with it (14x14 = 3 x 64 + 4):
    // 4 narrow FMAs per block on one tile instead of a one-vector pass over all blocks.
    int qx = -1;  // start of the tile they ride with
    if constexpr (L >= 8 && NV > 3) {
        const int rest = (q1 - q0) % (NV * L);
        if (q1 - q0 > NV * L && rest >= 1 && rest <= kRideAlong4x1) qx = q1 - rest - NV * L;
    }
    int q = q0;
    for (; q + NV * L <= q1 && q != qx; q += NV * L)
        if (g.prefetch_in)
            tile_rows<L, NV, M, true>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
        else
            tile_rows<L, NV, M>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
    if constexpr (L >= 8 && NV > 3) {
        switch (q == qx ? q1 - q - NV * L : 0) {
            case 1: return tile_rows<L, NV, M, false, 1>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
            case 2: return tile_rows<L, NV, M, false, 2>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
            case 3: return tile_rows<L, NV, M, false, 3>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
            case 4: return tile_rows<L, NV, M, false, 4>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
            default: break;
        }
    }
    if constexpr (L >= 8 && NV > 3) {  // 3 vectors + up to 2 positions left (7x7 on AVX-512: 48 + 1)
        const int rest = q1 - q;
        if (rest == 3 * L)
            return tile_rows<L, 3, M>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
        if (rest == 3 * L + 1)
            return tile_rows<L, 3, M, false, 1>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
        if (rest == 3 * L + 2)
            return tile_rows<L, 3, M, false, 2>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
    }
    if constexpr (NV > 2)
        for (; q + 2 * L <= q1; q += 2 * L)
            tile_rows<L, 2, M>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
    for (; q + L <= q1; q += L) tile_rows<L, 1, M>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
    if (q < q1)  // last partial vector: recompute an overlapping full vector, store only the new lanes
        tile_rows<L, 1, M>(g, q1 - L, q - (q1 - L), r0, r1, packed, row_start, off, out_ch, out, residual, act);
}


}  // namespace
}  // namespace jcw
