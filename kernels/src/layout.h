// Input re-layout for the 4x1-block tile: zero-padded, phase-split planes of the input, and the
// offsets that turn a (channel, tap) position code into a float offset from a virtual output position.
#pragma once
#include <cstddef>
#include <cstdint>

namespace jcw {

struct PlaneLayout {
    bool direct;     // 1x1, stride 1, no padding, big enough image: read the input in place
    int bands, hb;   // row bands of hb output rows (the last may be shorter), each with its own planes
    int hq, wq;      // plane rows (of one band) and columns
    int pk_h, pk_w;  // phases used along h / w: min(stride, k); shifted: 1 and kw
    bool shifted;    // stride 1 on narrow images: one plane per column tap kx, no padding columns
    int plane;       // floats from one plane to the next (>= hq * wq), a multiple of 16
    int qrun;        // virtual positions the kernel runs in a band: qend, or one whole tile when qend is smaller
};

inline size_t round16(size_t n) { return (n + 15) & ~size_t(15); }

// Virtual positions the kernel runs for `qend` valid ones: on small images (e.g. 7x7) one full
// register tile over zero-padded planes beats a cascade of narrow tiles (fewer loads per FMA), at
// the price of discarded lanes.
// `tile`: the kernel variant's register tile in pixels (lanes x vectors).
inline int run_positions(int qend, int tile) { return tile > 1 && qend < tile ? tile : qend; }

// Planes of `bands` row bands (1: the whole image).  Band t holds the plane rows that output rows
// [t hb, (t + 1) hb) read, halo rows included, for every channel, contiguously: a thread that
// writes and convolves one band touches one block of memory.  (With one set of planes split by
// rows instead, the two threads' rows alternate every plane, and the hardware prefetchers pull
// each other's lines across: measured, 2 threads wrote the planes no faster than 1.)
PlaneLayout plane_layout(int ho, int wo, int kh, int kw, int stride, int pad, int tile, int bands = 1);

// Floats of one band's planes (all channels), a multiple of 16.
inline size_t band_floats(const PlaneLayout& p, int in_ch) {
    return round16(static_cast<size_t>(in_ch) * p.pk_h * p.pk_w * p.plane);
}

// Writes the zero-padded, phase-split planes of channels [c0, c1) of the band whose first plane row
// is row `y0` of the image's: plane (c, a, b)[Y][X] = in[c][s*(y0 + Y) + a - pad][s*X + b - pad]
// (0 outside the input and past the last row).  Which rows and columns read the input depends
// only on the phase (a, b), so it is found once per call, not per channel or row.  With stride 1
// and planes as wide as the input (the shifted layout of "same" padding), a plane is one flat copy
// of the input moved by a constant offset, and only the columns that wrapped around a row edge
// are zeroed afterwards.
void make_planes(const float* in, int h, int w, const PlaneLayout& p, int stride, int pad, int c0, int c1, int y0,
                 float* planes);

// Offset (floats) of tap (c, ky, kx) relative to the virtual output position.
inline int32_t tap_offset(const PlaneLayout& p, int stride, int c, int ky, int kx) {
    const int phase = p.shifted ? kx : (ky % stride) * p.pk_w + (kx % stride);
    const size_t plane = p.plane;
    return static_cast<int32_t>((static_cast<size_t>(c) * p.pk_h * p.pk_w + phase) * plane +
                                static_cast<size_t>(ky / stride) * p.wq + (p.shifted ? 0 : kx / stride));
}


}  // namespace jcw
