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

// Tile of `NV` vectors of L pixels starting at virtual position q, `rows` out of 4 stored.
// Stores prefetch the same output lines of the next tile for writing; PF also prefetches its input.
template <int L, int NV, bool PF = false>
inline void tile_rows(const Geometry& g, int q, int first, int r0, int r1, const float* packed,
                      const int32_t* row_start, const int32_t* off, int out_ch, float* out, const float* residual,
                      Act act) {
    constexpr int W = L * NV;
    float tmp[4][W];
    // Segments of this tile that map to valid output pixels: (tile lane, output index, length).
    int seg_j[W], seg_o[W], seg_n[W], nseg = 0;
    seg_j[0] = seg_o[0] = seg_n[0] = 0;
    if (g.wv == g.wo) {  // no discarded columns: the tile is one run of outputs
        seg_j[0] = first, seg_o[0] = q + first, seg_n[0] = std::max(0, std::min(W, g.qend - q) - first), nseg = 1;
    }
    for (int j = nseg ? W : first; j < W;) {
        const int qq = q + j, y = qq / g.wv, x = qq - y * g.wv;
        if (y >= g.ho) break;
        if (x >= g.wo) {
            j += g.wv - x;
            continue;
        }
        const int n = std::min(W - j, g.wo - x);
        seg_j[nseg] = j, seg_o[nseg] = y * g.wo + x, seg_n[nseg] = n, ++nseg;
        j += n;
    }
    const int hw = g.hw;
    const float* in = g.base + q;
    for (int r = r0; r < r1; ++r) {
        const float* w = packed + 4 * (static_cast<size_t>(row_start[r]) + r);
        vec<L> acc[4][NV];
        for (int i = 0; i < 4; ++i)
            for (int v = 0; v < NV; ++v) acc[i][v] = simd::splat<L>(w[i]);
        w += 4;
        // Next tile's input: one of its NV lines per block, a different one per row.
        const int pf = W + (r % NV) * L;
        for (int b = row_start[r], e = row_start[r + 1]; b < e; ++b, w += 4) {
            const float* p = in + off[b];
            if constexpr (PF) __builtin_prefetch(p + pf);
            vec<L> x[NV];
            for (int v = 0; v < NV; ++v) x[v] = simd::load<L>(p + v * L);
            for (int i = 0; i < 4; ++i)
                for (int v = 0; v < NV; ++v) acc[i][v] += w[i] * x[v];
        }
        const int nrow = std::min(4, out_ch - 4 * r);
        if (nseg == 1 && seg_n[0] == W) {  // whole tile is one contiguous run of outputs: store from registers
            for (int i = 0; i < nrow; ++i) {
                const size_t o = (4 * static_cast<size_t>(r) + i) * hw + seg_o[0];
                for (int v = 0; v < NV; ++v) {
                    __builtin_prefetch(out + o + W + v * L, 1);
                    vec<L> y = acc[i][v];
                    if (residual) y += simd::load<L>(residual + o + v * L);
                    simd::store<L>(out + o + v * L, simd::activate<L>(y, act));
                }
            }
            continue;
        }
        for (int i = 0; i < nrow; ++i) {
            for (int v = 0; v < NV; ++v) simd::store<L>(tmp[i] + v * L, acc[i][v]);
            const size_t oc = 4 * static_cast<size_t>(r) + i;
            float* o = out + oc * hw;
            const float* res = residual ? residual + oc * hw : nullptr;
            for (int s = 0; s < nseg; ++s)
                simd::emit<L>(tmp[i] + seg_j[s], res ? res + seg_o[s] : nullptr, o + seg_o[s], seg_n[s], act);
        }
    }
}

// All tiles of virtual range [q0, q1) for block rows [r0, r1); needs g.qend >= L.  rows_outer:
// finish one block row over all tiles before the next (weights stay in cache: small images);
// else run all rows per tile (the input tile stays in cache: large images).
template <int L, int NV>
void conv_range(const Geometry& g, int q0, int q1, int r0, int r1, bool rows_outer, const float* packed,
                const int32_t* row_start, const int32_t* off, int out_ch, float* out, const float* residual,
                Act act) {
    if (rows_outer) {  // chunks of block rows whose weights fit in L1, all tiles per chunk
        constexpr int32_t kChunkBlocks = 1536;  // 1536 * (16 + 4) bytes = 30 KiB
        for (int r = r0; r < r1;) {
            int e = r + 1;
            while (e < r1 && row_start[e + 1] - row_start[r] <= kChunkBlocks) ++e;
            conv_range<L, NV>(g, q0, q1, r, e, false, packed, row_start, off, out_ch, out, residual, act);
            r = e;
        }
        return;
    }
    int q = q0;
    for (; q + NV * L <= q1; q += NV * L)
        if (g.prefetch_in)
            tile_rows<L, NV, true>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
        else
            tile_rows<L, NV>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
    if constexpr (NV > 2)
        for (; q + 2 * L <= q1; q += 2 * L)
            tile_rows<L, 2>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
    for (; q + L <= q1; q += L) tile_rows<L, 1>(g, q, 0, r0, r1, packed, row_start, off, out_ch, out, residual, act);
    if (q < q1)  // last partial vector: recompute an overlapping full vector, store only the new lanes
        tile_rows<L, 1>(g, q1 - L, q - (q1 - L), r0, r1, packed, row_start, off, out_ch, out, residual, act);
}


}  // namespace
}  // namespace jcw
