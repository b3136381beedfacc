// Dense register tile for groups-1 convolutions: R output channels x NV vectors of L pixels per
// step.  Every block row of a dense groups-1 packing holds the same positions in the same order,
// so R / 4 block rows can share one pass over the positions: each loaded input vector feeds R
// FMAs instead of 4.  With R = 8, NV = 3 on AVX-512 (24 accumulators) a step loads 3 input
// vectors and 8 weights for 24 FMAs, against 4 vectors and 4 weights for 16 with the 4x1 tile:
// half the input loads per FMA, which is what deep layers whose input planes do not fit
// in L1 wait on (docs/kernels.md, "Dense register tile").
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "../simd.h"
#include "geometry.h"
#include "tile_4x1.h"

namespace jcw {
namespace {

// Weights are read once per tile in order; deep layers' weights (megabytes) come from memory when
// the network's other layers have evicted them, and the hardware prefetchers do not keep that
// stream ahead (3x3 512->512 @7 after 512 MiB of other traffic: 4.3 ms without, 2.1-2.3 ms with a
// prefetch 32-128 blocks ahead, 1.7 ms with the weights in cache; docs/kernels.md).
constexpr int kWeightPrefetchBlocks = 64;
// Most positions past the last whole tile that ride along with it (each costs a broadcast and an
// R-lane FMA per position; more would spill the 32 registers of AVX-512).
constexpr int kDenseRideAlong = 2;

// One tile at virtual position q (lanes from `first` on) for channel groups [k0, k1).  `wd` is the
// re-packed weight stream (pack_dense_rows): per group, R biases then R weights per position.
// PF: each position also prefetches one of the next tile's input lines, a different one per group
// (as the 4x1 tile does for input-dominated layers).
// X > 0: the X positions after the tile ride along (store_ride_along in tile_4x1.h); a second,
// one-vector pass would cost R broadcasts per position for R FMAs.
template <int L, int NV, int R, bool M, bool PF = false, int X = 0>
inline void dense_tile(const Geometry& g, int q, int first, int k0, int k1, const float* wd, int codes,
                       const int32_t* off, int out_ch, float* out, const float* residual, Act act) {
    const TileSegments<L * NV> segs(g, q, first);
    const bool whole = segs.whole();
    const int start = segs.o[0];
    const float* in = g.base + q;
    for (int k = k0; k < k1; ++k) {
        const float* w = wd + static_cast<size_t>(k) * R * (codes + 1);
        vec<L> acc[R][NV];
        for (int i = 0; i < R; ++i)
            for (int v = 0; v < NV; ++v) acc[i][v] = simd::splat<L>(w[i]);
        vec<R> ax[X > 0 ? X : 1];
        for (int e = 0; e < X; ++e) ax[e] = simd::load<R>(w);  // ride-along positions start at the biases
        w += R;
        const int pf = L * NV + (k % NV) * L;
        for (int b = 0; b < codes; ++b, w += R) {
            const float* p = in + off[b];
            if constexpr (PF) __builtin_prefetch(p + pf);
            __builtin_prefetch(w + kWeightPrefetchBlocks * R);
            vec<L> x[NV];
            for (int v = 0; v < NV; ++v) x[v] = simd::load<L>(p + v * L);
            for (int i = 0; i < R; ++i)
                for (int v = 0; v < NV; ++v) acc[i][v] += w[i] * x[v];
            if constexpr (X > 0) {
                const vec<R> wr = simd::load<R>(w);
                for (int e = 0; e < X; ++e) ax[e] += wr * p[L * NV + e];
            }
        }
        const int nrow = std::min(R, out_ch - R * k);
        JCW_UNROLL for (int i = 0; i < R; ++i) if (i < nrow)
            store_tile_row<L, NV, M>(acc[i], segs, whole, start, g.hw, static_cast<size_t>(R) * k + i, out, residual, act);
        if constexpr (X > 0) store_ride_along<R, M, X>(ax, g, q + L * NV, nrow, static_cast<size_t>(R) * k, out, residual, act);
    }
}

// All tiles of virtual range [q0, q1) for channel groups [k0, k1); needs g.qend >= L.  rows_outer:
// one group over all tiles before the next (its weights stay in cache), else all groups per tile.
template <int L, int NV, int R, bool M>
void dense_range(const Geometry& g, int q0, int q1, int k0, int k1, bool rows_outer, const float* wd, int codes,
                 const int32_t* off, int out_ch, float* out, const float* residual, Act act) {
    if (rows_outer) {
        for (int k = k0; k < k1; ++k)
            dense_range<L, NV, R, M>(g, q0, q1, k, k + 1, false, wd, codes, off, out_ch, out, residual, act);
        return;
    }
    // A remainder of 1 or 2 positions past the last whole tile rides along with it (X above).
    const int rem = q1 - q0 >= NV * L ? (q1 - q0) % (NV * L) : 0;
    const int qx = rem >= 1 && rem <= kDenseRideAlong ? q1 - rem - NV * L : -1;  // that tile's start
    int q = q0;
    for (; q + NV * L <= q1 && q != qx; q += NV * L)
        if (g.prefetch_in)
            dense_tile<L, NV, R, M, true>(g, q, 0, k0, k1, wd, codes, off, out_ch, out, residual, act);
        else
            dense_tile<L, NV, R, M>(g, q, 0, k0, k1, wd, codes, off, out_ch, out, residual, act);
    if (q == qx) {
        if (rem == 1)
            dense_tile<L, NV, R, M, false, 1>(g, q, 0, k0, k1, wd, codes, off, out_ch, out, residual, act);
        else
            dense_tile<L, NV, R, M, false, 2>(g, q, 0, k0, k1, wd, codes, off, out_ch, out, residual, act);
        return;
    }
    if constexpr (NV > 1)
        for (; q + L <= q1; q += L) dense_tile<L, 1, R, M>(g, q, 0, k0, k1, wd, codes, off, out_ch, out, residual, act);
    if (q < q1)  // last partial vector: recompute an overlapping full vector, store only the new lanes
        dense_tile<L, 1, R, M>(g, q1 - L, q - (q1 - L), k0, k1, wd, codes, off, out_ch, out, residual, act);
}

}  // namespace
}  // namespace jcw
