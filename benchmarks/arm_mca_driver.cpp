// Driver for benchmarks/arm_mca.py: compiles the engine's conv microkernels (kernels/src/micro/)
// for AArch64 and
// instantiates each one in its own noinline, flattened extern "C" function, so that the assembly
// (-S) of each function holds exactly one microkernel with the engine's NEON parameters
// (JCW_LANES = 4, JCW_TILE_VECS = 4), in the instance the engine runs for the ReLU class (M = false:
// simd::activate without the other activations' code).  Geometry, activation and residual are compile-time
// constants where the engine's steady state has them fixed (a tile that is one contiguous run of
// outputs, ReLU, no residual), so that the per-outer-iteration code around the inner loop is one
// straight path; pointers and loop bounds the microkernel reads per call stay run-time arguments.
// Nothing here is linked or run: only the generated assembly is read.
#include "../kernels/src/micro/depthwise.h"
#include "../kernels/src/micro/tile_4x1.h"

#define JCW_MCA extern "C" __attribute__((noinline, flatten))

namespace jcw {

// 4x1 block-sparse tile (sparse 1x1 / 3x3 and dense through the same packing): block rows
// [0, 16) of a 64-channel layer over one tile of NV * L pixels of a 56x56 image.
JCW_MCA void mca_tile_rows(const float* base, const float* packed, const int32_t* row_start, const int32_t* off,
                           float* out) {
    Geometry g;
    g.ho = 56, g.wo = 56, g.wv = 56, g.hw = 56 * 56, g.qend = 56 * 56, g.base = base;
    tile_rows<JCW_LANES, JCW_TILE_VECS, false>(g, 0, 0, 0, 16, packed, row_start, off, 64, out, nullptr, Act::Relu);
}

// The same tile with the next tile's input prefetched once per block (input-dominated layers).
JCW_MCA void mca_tile_rows_pf(const float* base, const float* packed, const int32_t* row_start, const int32_t* off,
                              float* out) {
    Geometry g;
    g.ho = 56, g.wo = 56, g.wv = 56, g.hw = 56 * 56, g.qend = 56 * 56, g.base = base;
    tile_rows<JCW_LANES, JCW_TILE_VECS, false, true>(g, 0, 0, 0, 16, packed, row_start, off, 64, out, nullptr,
                                                     Act::Relu);
}

// Depthwise 3x3 stride 1 straight from the CHW input (row pairs, 18 FMAs per column vector).
JCW_MCA void mca_dw3_direct(const float* in, int h, int w, int c1, const float* dw, const float* bias, float* out) {
    depthwise3x3_direct<JCW_LANES, false>(in, h, w, 0, c1, dw, bias, out, nullptr, Act::Relu);
}

// The same with the compiled row-pair loop only: on cortex-a53 (neon_a53) the assembly loop above
// covers columns [4, 8 * (w / 8) - 4) of rows at least 16 wide, this loop the other columns and narrower rows.
JCW_MCA void mca_dw3_direct_cpp(const float* in, int h, int w, int c1, const float* dw, const float* bias,
                                float* out) {
    depthwise3x3_direct<JCW_LANES, false, false>(in, h, w, 0, c1, dw, bias, out, nullptr, Act::Relu);
}

// Depthwise 3x3 stride 2 straight from the CHW input.
JCW_MCA void mca_dw3s2_direct(const float* in, int h, int w, int c1, const float* dw, const float* bias,
                              float* out) {
    depthwise3x3s2_direct<JCW_LANES, false>(in, h, w, 0, c1, dw, bias, out, nullptr, Act::Relu);
}

// The same with the compiled loop only: on cortex-a53 (neon_a53) the assembly above covers outputs
// [0, 8 * (w / 16)) of the inner rows of images at least 32 wide, this loop the rest.
JCW_MCA void mca_dw3s2_direct_cpp(const float* in, int h, int w, int c1, const float* dw, const float* bias,
                                  float* out) {
    depthwise3x3s2_direct<JCW_LANES, false, false>(in, h, w, 0, c1, dw, bias, out, nullptr, Act::Relu);
}

// Depthwise 3x3 stride 1 on images narrower than a vector (flattened channel, lane masks).
JCW_MCA void mca_dw3_flat(const float* pad_in, int h, int w, int c1, const float* masks, const float* dw,
                          const float* bias, float* out) {
    depthwise_flat<JCW_LANES, 3, false>(pad_in, static_cast<size_t>(h) * w + 2 * w + 2, h, w, 0, c1, masks,
                                        static_cast<size_t>(h) * w, dw, bias, out, nullptr, Act::Relu);
}

// Depthwise 5x5 stride 1 (flattened channel, lane masks), any image.
JCW_MCA void mca_dw5_flat(const float* pad_in, int h, int w, int c1, const float* masks, const float* dw,
                          const float* bias, float* out) {
    depthwise_flat<JCW_LANES, 5, false>(pad_in, static_cast<size_t>(h) * w + 4 * w + 4, h, w, 0, c1, masks,
                                        static_cast<size_t>(h) * w, dw, bias, out, nullptr, Act::Relu);
}

}  // namespace jcw
