// Input re-layout into padded phase planes (layout.h).  Compiled with the build's baseline flags.
#include "layout.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "simd.h"

namespace jcw {

namespace {

// One input row s (w floats) into plane rows d0 (columns 2X - pad) and d1 (2X + 1 - pad; none when
// null), X in [0, wq), zeros outside the row: even / odd lanes of 2L-float loads inside it.
void split_row(const float* s, int w, int pad, int wq, float* d0, float* d1) {
    constexpr int L = JCW_LANES;
    auto one = [&](int X) {
        const int c = 2 * X - pad;
        d0[X] = c >= 0 && c < w ? s[c] : 0.f;
        if (d1) d1[X] = c + 1 >= 0 && c + 1 < w ? s[c + 1] : 0.f;
    };
    int X = 0;
    for (; X < wq && 2 * X - pad < 0; ++X) one(X);
    for (; X + L <= wq && 2 * X - pad + 2 * L <= w; X += L) {
        const simd::vec<L> a = simd::load<L>(s + 2 * X - pad), b = simd::load<L>(s + 2 * X - pad + L);
        simd::store<L>(d0 + X, simd::deinterleave<L, 0>(a, b));
        if (d1) simd::store<L>(d1 + X, simd::deinterleave<L, 1>(a, b));
    }
    for (; X < wq; ++X) one(X);
}

}  // namespace

PlaneLayout plane_layout(int ho, int wo, int kh, int kw, int stride, int pad, int tile, int bands) {
    PlaneLayout p;
    p.hb = (ho + std::clamp(bands, 1, ho) - 1) / std::clamp(bands, 1, ho);
    p.bands = (ho + p.hb - 1) / p.hb;  // none empty
    p.direct = kh == 1 && kw == 1 && stride == 1 && pad == 0 && p.bands == 1;
    p.hq = p.hb + (kh - 1) / stride;
    p.wq = wo + (kw - 1) / stride;
    p.pk_h = std::min(stride, kh);
    p.pk_w = std::min(stride, kw);
    // Stride 1 on narrow images (padding columns >= 1/8 of a row are computed and discarded):
    // kw planes per channel, plane kx[Y][X] = in[Y - pad][X + kx - pad], so the virtual rows are
    // exactly the output rows; the generic stride-1 plane writer produces them with b = kx.
    if (stride == 1 && kw > 1 && 8 * (kw - 1) > wo && (p.hb - 1) * p.wq + wo >= tile) {
        p.shifted = true;
        p.wq = wo;
        p.pk_h = 1;
        p.pk_w = kw;
    } else {
        p.shifted = false;
    }
    const int qend = (p.hb - 1) * p.wq + wo;
    p.qrun = run_positions(qend, tile);
    if (p.qrun != qend) p.direct = false;
    p.plane = static_cast<int>(round16(std::max(p.hq * p.wq, p.qrun + (kh - 1) / stride * p.wq + (kw - 1) / stride)));
    return p;
}


void make_planes(const float* in, int h, int w, const PlaneLayout& p, int stride, int pad, int c0, int c1, int y0,
                 float* planes) {
    const size_t plane = p.plane, wq = p.wq;
    const bool flat = stride == 1 && p.wq == w;
    struct Phase {
        int Y0, Y1, x0, x1;  // plane rows that read input rows, columns that read input columns
        int64_t off;         // input column (stride 1: flat input index) of plane column 0 (flat index 0)
        size_t lo, hi;       // flat: the copied floats
    };
    std::vector<Phase> phases(static_cast<size_t>(p.pk_h) * p.pk_w);
    for (int a = 0; a < p.pk_h; ++a)
        for (int b = 0; b < p.pk_w; ++b) {
            Phase& f = phases[a * p.pk_w + b];
            f.Y0 = std::clamp((pad - a + stride - 1) / stride - y0, 0, p.hq);
            f.Y1 = std::clamp((h + pad - a + stride - 1) / stride - y0, f.Y0, p.hq);
            f.x0 = std::clamp((pad - b + stride - 1) / stride, 0, p.wq);
            f.x1 = std::clamp((w + pad - b + stride - 1) / stride, f.x0, p.wq);
            f.off = b - pad;
            if (flat) {  // dst[j] = src[j + off] over rows Y0..Y1, clipped to the input
                f.off += static_cast<int64_t>(y0 + a - pad) * w;
                const int64_t j0 = static_cast<int64_t>(f.Y0) * w, j1 = static_cast<int64_t>(f.Y1) * w;
                const int64_t lo = std::clamp(-f.off, j0, j1);
                f.lo = lo;
                f.hi = std::clamp(static_cast<int64_t>(h) * w - f.off, lo, j1);
            }
        }
    if (stride == 2) {  // both column phases of an input row in one pass over it
        for (int c = c0; c < c1; ++c) {
            const float* src = in + static_cast<size_t>(c) * h * w;
            for (int a = 0; a < p.pk_h; ++a) {
                const Phase& f = phases[a * p.pk_w];  // rows depend on the row phase only
                float* d0 = planes + (static_cast<size_t>(c) * p.pk_h * p.pk_w + a * p.pk_w) * plane;
                float* d1 = p.pk_w > 1 ? d0 + plane : nullptr;
                for (float* d : {d0, d1}) {
                    if (!d) continue;
                    std::memset(d, 0, sizeof(float) * (f.Y0 * wq));
                    std::memset(d + f.Y1 * wq, 0, sizeof(float) * (plane - f.Y1 * wq));
                }
                for (int Y = f.Y0; Y < f.Y1; ++Y)
                    split_row(src + static_cast<size_t>(2 * (y0 + Y) + a - pad) * w, w, pad, p.wq, d0 + Y * wq,
                              d1 ? d1 + Y * wq : nullptr);
            }
        }
        return;
    }
    for (int c = c0; c < c1; ++c) {
        const float* src = in + static_cast<size_t>(c) * h * w;
        for (int a = 0; a < p.pk_h; ++a)
            for (int b = 0; b < p.pk_w; ++b) {
                const Phase& f = phases[a * p.pk_w + b];
                float* dst = planes + (static_cast<size_t>(c) * p.pk_h * p.pk_w + a * p.pk_w + b) * plane;
                if (flat) {  // zeros, the shifted copy, zeros; then the columns that wrapped round a row edge
                    std::memset(dst, 0, sizeof(float) * f.lo);
                    std::memcpy(dst + f.lo, src + f.lo + f.off, sizeof(float) * (f.hi - f.lo));
                    std::memset(dst + f.hi, 0, sizeof(float) * (plane - f.hi));
                    if (f.x0 > 0 || f.x1 < p.wq)
                        for (int Y = f.Y0; Y < f.Y1; ++Y) {
                            float* d = dst + Y * wq;
                            for (int X = 0; X < f.x0; ++X) d[X] = 0.f;
                            for (int X = f.x1; X < p.wq; ++X) d[X] = 0.f;
                        }
                    continue;
                }
                std::memset(dst, 0, sizeof(float) * (f.Y0 * wq));
                std::memset(dst + f.Y1 * wq, 0, sizeof(float) * (plane - f.Y1 * wq));
                for (int Y = f.Y0; Y < f.Y1; ++Y) {
                    float* d = dst + Y * wq;
                    const float* s = src + static_cast<size_t>(stride * (y0 + Y) + a - pad) * w;
                    for (int X = 0; X < f.x0; ++X) d[X] = 0.f;
                    if (stride == 1)
                        std::memcpy(d + f.x0, s + f.x0 + f.off, sizeof(float) * (f.x1 - f.x0));
                    else
                        for (int X = f.x0; X < f.x1; ++X) d[X] = s[stride * X + f.off];
                    for (int X = f.x1; X < p.wq; ++X) d[X] = 0.f;
                }
            }
    }
}


}  // namespace jcw
