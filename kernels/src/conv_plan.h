// Conv2d's plan for one (input size, threads, kernel variant), built once and cached in the op.
#pragma once
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernel_set.h"
#include "layout.h"
#include "ops.h"

namespace jcw {

enum class ConvPath {
    DepthwiseFlat,      // 3x3 s1 p1 depthwise on images narrower than a vector (micro/depthwise.h)
    DepthwiseDirect,    // 3x3 s1/s2 p1 depthwise straight from the input
    DepthwisePlanes,    // any other depthwise, over padded planes
    ChannelVectorised,  // dense 1x1 s1 on small images (micro/dense_cv.h)
    Gemv,               // 1x1 s1 on a single pixel (squeeze-excitation): 4x1 blocks against the input vector
    DenseTile,          // dense groups-1 with the variant's dense register tile (micro/dense_tile.h)
    Tile,               // everything else: 4x1-block tile over the input or its planes (micro/tile_4x1.h)
};

struct Conv2d::ConvPlan {
    int in_h = 0, in_w = 0, threads = 1;
    const KernelSet* ks = nullptr;
    bool dense_tile = false;  // the set_dense_tile switch the plan was made under
    ConvPath path = ConvPath::Tile;
    int lanes = 1;       // vector width the path runs at (<= ks->lanes)
    std::string kernel;  // "<variant> <microkernel>", for the plan printout
    // Tile and DepthwisePlanes
    PlaneLayout p{};
    Geometry g{};                 // g.base is set per call
    size_t plane_floats_all = 0;  // floats of the (single-band) planes in the scratch
    bool rows_outer = false, split_q = false;
    int tile = 1, qrun = 0;
    std::shared_ptr<const std::vector<int32_t>> off;  // block offsets, one band
    PlaneLayout pb{};                                 // one row band per thread (banded)
    bool banded = false;
    std::shared_ptr<const std::vector<int32_t>> band_off;
    std::vector<int32_t> tap_off;  // DepthwisePlanes: per-tap offsets
    int plane_floats = 0;
    // DenseTile: weights re-packed per group of ks->dense_rows channels (pack_dense_rows)
    std::vector<float> wd;
    int groups_of_rows = 0, codes = 0;
    // ChannelVectorised: weights re-packed as [block of lanes channels][in_ch][lanes]
    std::vector<float> cv_w, cv_bias;
};

struct Conv2d::PlanCache {
    std::mutex m;
    std::vector<std::shared_ptr<const ConvPlan>> plans;  // most recent last, a few at most
};

// Dense groups-1 packing re-laid for the dense tile: per group of `rows` output channels, their
// biases, then per position their `rows` weights (channels past out_ch zero) (pack.cpp).
// Any groups-1 packing (dense, or block-sparse: its missing positions become zeros); `codes` the
// block positions, `positions` = in_ch * kh * kw.
std::vector<float> pack_dense_rows(const float* packed, const int32_t* row_start, const int32_t* codes, int positions,
                                   int out_ch, int rows);

// Dense groups-1 packing re-laid for the channel-vectorised kernel (pack.cpp).
std::vector<float> channel_pack(const float* packed, const int32_t* row_start, int out_ch, int in_ch,
                                const float* bias, int lanes, std::vector<float>& cv_bias);

}  // namespace jcw
