// One block row of a 4x1-block packing against a vector: shared by Linear (sparse rows) and by
// Conv2d's 1x1 convs on a single pixel (ops.h).  Compiled with the build's baseline flags.
#pragma once
#include <cstddef>
#include <cstdint>

#include "simd.h"

namespace jcw {
namespace {

// y[0..4) = the 4 outputs of block row r: packed holds per row its 4 biases, then 4 weights per
// block; block b reads x[col[b]].  Two chains of 4-wide multiply-adds.
inline void block_row_gemv(const float* packed, const int32_t* row_start, const int32_t* col, const float* x, int r,
                           float y[4]) {
    const float* w = packed + 4 * (static_cast<size_t>(row_start[r]) + r);
    simd::vec<4> acc = simd::load<4>(w), acc2 = simd::splat<4>(0.f);
    w += 4;
    int b = row_start[r];
    const int e = row_start[r + 1];
    for (; b + 1 < e; b += 2, w += 8) {
        acc += x[col[b]] * simd::load<4>(w);
        acc2 += x[col[b + 1]] * simd::load<4>(w + 4);
    }
    if (b < e) acc += x[col[b]] * simd::load<4>(w);
    simd::store<4>(y, acc + acc2);
}

}  // namespace
}  // namespace jcw
