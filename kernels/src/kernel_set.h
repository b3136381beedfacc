// One kernel variant: the conv microkernels compiled for one ISA (and core tuning), as function
// pointers.  kernels/src/micro/variant.cpp is compiled once per variant with that variant's flags
// (CMakeLists.txt); dispatch.cpp picks one at load from the CPU and every op calls through it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "micro/geometry.h"
#include "ops.h"

namespace jcw {

struct KernelSet {
    const char* name;  // variant: "avx512", "avx2", "sse2", "neon", "neon_a53", "native", "scalar"
    const char* isa;   // instruction set of its vectors: "avx512", "avx2", "sse2", "neon", "scalar"
    int lanes;         // floats per vector (1: the portable scalar kernels)
    int tile_vecs;     // vectors per row of the 4x1-block register tile

    // 4x1-block tile over virtual positions [q0, q1) and block rows [r0, r1) (micro/tile_4x1.h);
    // `lanes` is lanes, 4 or 1.
    void (*conv)(int lanes, const Geometry& g, int q0, int q1, int r0, int r1, bool rows_outer, const float* packed,
                 const int32_t* row_start, const int32_t* off, int out_ch, float* out, const float* residual, Act act);
    // Dense groups-1 tile of `dense_rows` output channels (micro/dense_tile.h) over channel groups
    // [k0, k1), weights re-packed by pack_dense_rows; `lanes` is lanes.  dense_rows 0: none.
    int dense_rows, dense_vecs;  // its tile: dense_rows channels x dense_vecs vectors of `lanes` pixels
    void (*dense)(const Geometry& g, int q0, int q1, int k0, int k1, bool rows_outer, const float* wd, int codes,
                  const int32_t* off, int out_ch, float* out, const float* residual, Act act);
    // Channel-vectorised dense 1x1 on blocks [b0, b1) of `lanes` output channels (micro/dense_cv.h).
    void (*cv_blocks)(const float* cv, const float* bias, const float* in, int k, int hw, int out_ch, int b0, int b1,
                      float* out, const float* residual, Act act);
    // Depthwise over planes, generic taps or 3x3 (`k3`), `lanes` in {lanes, 8, 4, 1}.
    void (*depthwise)(int lanes, bool k3, const Geometry& g, int c0, int c1, int plane_floats, const int32_t* tap_off,
                      int taps, const float* dw, const float* bias, float* out, const float* residual, Act act);
    // Depthwise 3x3 pad 1 straight from the input, stride 1 or 2.
    void (*dw3_direct)(int lanes, int stride, const float* in, int h, int w, int c0, int c1, const float* dw,
                       const float* bias, float* out, const float* residual, Act act);
    // Depthwise k x k (3 or 5) stride 1 over flattened channels (lanes or 1): 3x3 on images
    // narrower than a vector, 5x5 on any; k - 1 column masks `mstride` floats apart.
    void (*dw_flat)(int lanes, int k, const float* pad_in, size_t cstride, int h, int w, int c0, int c1,
                    const float* masks, size_t mstride, const float* dw, const float* bias, float* out,
                    const float* residual, Act act);
    // Single-thread FMA throughput with this variant's vectors, GFLOP/s.
    double (*fma_peak)(double seconds);
};

// The set every op uses now: the scalar set under set_force_scalar(true), else the selected variant.
const KernelSet& active_kernels();
// The set a layer of autotune class `cls` runs (set_class_variant), else active_kernels().
const KernelSet& kernels_for_class(const std::string& cls);
// Every variant this CPU can run, best first, then "scalar".
const KernelSet* const* runnable_kernel_sets(int* n);

}  // namespace jcw
