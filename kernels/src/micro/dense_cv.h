// Channel-vectorised dense 1x1 (small images): L output channels x P pixels per tile.
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

// Dense 1x1 stride-1 convolution on small images, vectorised over output channels: a tile is
// L output channels x P pixels held in P accumulators, each step one weight vector (L channels
// at one input channel) times P broadcast input pixels.  Pixel vectors would fill only 49 of 64
// lanes at 7x7 (and recompute a whole vector for the last pixel); channel vectors are always
// full.  wblk: K x L weights of the tile's channel block (zero past out_ch), bias: L floats.
template <int L, int P, bool M>
inline void cv_tile(const float* wblk, const float* bias, const float* in, int k, int hw, int p0, int co0, int nco,
                    float* out, const float* residual, Act act) {
    vec<L> acc[P];
    const vec<L> b = simd::load<L>(bias);
    for (int j = 0; j < P; ++j) acc[j] = b;
    const float* x = in + p0;
    for (int c = 0; c < k; ++c, x += hw) {
        // The weight stream, ahead (as the dense tile: megabytes of deep-layer weights come from memory).
        __builtin_prefetch(wblk + static_cast<size_t>(c + 32) * L);
        const vec<L> w = simd::load<L>(wblk + static_cast<size_t>(c) * L);
        for (int j = 0; j < P; ++j) acc[j] += w * x[j];
    }
    float t[P][L], row[P];
    for (int j = 0; j < P; ++j) simd::store<L>(t[j], acc[j]);
    for (int l = 0; l < nco; ++l) {
        for (int j = 0; j < P; ++j) row[j] = t[j][l];
        const size_t o = static_cast<size_t>(co0 + l) * hw + p0;
        simd::emit<1, M>(row, residual ? residual + o : nullptr, out + o, P, act);
    }
}

template <int L, bool M>
void cv_blocks(const float* cv, const float* bias, const float* in, int k, int hw, int out_ch, int b0, int b1,
               float* out, const float* residual, Act act) {
    constexpr int P = 7;
    for (int b = b0; b < b1; ++b) {
        const float* wblk = cv + static_cast<size_t>(b) * k * L;
        const int co0 = b * L, nco = std::min(L, out_ch - co0);
        int p = 0;
        for (; p + P <= hw; p += P) cv_tile<L, P, M>(wblk, bias + co0, in, k, hw, p, co0, nco, out, residual, act);
        switch (hw - p) {
#define JCW_CV(N) case N: cv_tile<L, N, M>(wblk, bias + co0, in, k, hw, p, co0, nco, out, residual, act); break;
            JCW_CV(1) JCW_CV(2) JCW_CV(3) JCW_CV(4) JCW_CV(5) JCW_CV(6)
#undef JCW_CV
            default: break;
        }
    }
}


}  // namespace
}  // namespace jcw
