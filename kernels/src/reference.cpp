#include "reference.h"

namespace jcw {

void conv2d_reference(const ConvShape& s, const float* input, const float* weight, const float* bias,
                      float* out) {
    const int64_t oh = s.out_h(), ow = s.out_w();
    const int64_t icg = s.in_ch / s.groups, ocg = s.out_ch / s.groups;
    for (int64_t b = 0; b < s.n; ++b) {
        for (int64_t oc = 0; oc < s.out_ch; ++oc) {
            const int64_t g = oc / ocg;
            float* o = out + ((b * s.out_ch + oc) * oh) * ow;
            for (int64_t y = 0; y < oh; ++y) {
                for (int64_t x = 0; x < ow; ++x) {
                    double acc = bias ? bias[oc] : 0.0;
                    for (int64_t ic = 0; ic < icg; ++ic) {
                        const float* in = input + ((b * s.in_ch + g * icg + ic) * s.in_h) * s.in_w;
                        const float* w = weight + ((oc * icg + ic) * s.kh) * s.kw;
                        for (int64_t ky = 0; ky < s.kh; ++ky) {
                            const int64_t iy = y * s.stride_h - s.pad_h + ky;
                            if (iy < 0 || iy >= s.in_h) continue;
                            for (int64_t kx = 0; kx < s.kw; ++kx) {
                                const int64_t ix = x * s.stride_w - s.pad_w + kx;
                                if (ix < 0 || ix >= s.in_w) continue;
                                acc += static_cast<double>(in[iy * s.in_w + ix]) * w[ky * s.kw + kx];
                            }
                        }
                    }
                    o[y * ow + x] = static_cast<float>(acc);
                }
            }
        }
    }
}

}  // namespace jcw
