// Reference kernels: plain, obviously-correct loops.  They define what the fast kernels compute
// and serve as the portable scalar fallback.
#pragma once
#include <cstdint>

namespace jcw {

struct ConvShape {
    int64_t n, in_ch, in_h, in_w;   // input NCHW
    int64_t out_ch, kh, kw;         // weight is out_ch x (in_ch / groups) x kh x kw
    int64_t stride_h, stride_w, pad_h, pad_w, groups;
    int64_t out_h() const { return (in_h + 2 * pad_h - kh) / stride_h + 1; }
    int64_t out_w() const { return (in_w + 2 * pad_w - kw) / stride_w + 1; }
};

// Direct convolution, NCHW float32.  `bias` may be null.  `out` is n x out_ch x out_h x out_w.
void conv2d_reference(const ConvShape& s, const float* input, const float* weight, const float* bias,
                      float* out);

}  // namespace jcw
