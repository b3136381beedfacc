// Geometry of one run of the 4x1-block tile and the plane-reading depthwise kernel (shared by every
// kernel variant and by the planner in conv.cpp).
#pragma once
#include <cstdint>

namespace jcw {

// Geometry of one run: the input is read through "virtual" output positions q = y * wv + x
// over planes of width wv; columns x >= wo of a virtual row are computed and discarded.
struct Geometry {
    int ho, wo, wv;      // output rows (of this band) and columns, virtual row width
    int hw;              // floats from one output channel to the next
    int qend;            // (ho - 1) * wv + wo: positions past it are computed and discarded
    bool prefetch_in = false;  // short rows, input-dominated (rows inner): prefetch the next tile's input
    const float* base;   // plane data (the input itself for 1x1 stride 1 without padding)
    // K-blocking of the 4x1 tile (nk > 1): the input channels in nk chunks; the blocks of chunk k of
    // block row r are kstart[r * (nk + 1) + k] .. kstart[r * (nk + 1) + k + 1] (micro/tile_4x1.h).
    int nk = 1;
    const int32_t* kstart = nullptr;
};

}  // namespace jcw
