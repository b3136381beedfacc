// Geometry of one run of the 4x1-block tile and the plane-reading depthwise kernel (shared by every
// kernel variant and by the planner in conv.cpp).
#pragma once

namespace jcw {

// Geometry of one run: the input is read through "virtual" output positions q = y * wv + x
// over planes of width wv; columns x >= wo of a virtual row are computed and discarded.
struct Geometry {
    int ho, wo, wv;      // output rows (of this band) and columns, virtual row width
    int hw;              // floats from one output channel to the next
    int qend;            // (ho - 1) * wv + wo: positions past it are computed and discarded
    bool prefetch_in = false;  // short rows, input-dominated (rows inner): prefetch the next tile's input
    const float* base;   // plane data (the input itself for 1x1 stride 1 without padding)
};

}  // namespace jcw
