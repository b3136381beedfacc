// Pooling and elementwise ops.
#include <algorithm>
#include <limits>
#include <vector>

#include "ops.h"
#include "simd.h"

namespace jcw {

// Per output row: the column-wise max of its kernel rows into a -inf padded row buffer
// (contiguous, vectorised), then the max over each output's kernel columns: for stride 2, the
// even / odd lanes of the buffer (kernel columns 2x + j) vector by vector, else one column offset
// at a time.
void max_pool2d(const float* in, int c, int h, int w, int k, int stride, int pad, float* out, ThreadPool& pool) {
    constexpr int L = JCW_LANES;
    const int oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    // The stride-2 vector loop reads up to 2 L + k - 2 floats past its last output's column 2x.
    const int wp = std::max(w + 2 * pad, (ow - 1) * stride + k) + 2 * L + k;
    const int chunks = std::min(c, pool.size() * 4);
    constexpr float kLow = -std::numeric_limits<float>::infinity();
    pool.parallel_for(chunks, [&](int i) {
        std::vector<float> row(wp, kLow);
        for (int ch = c * i / chunks; ch < c * (i + 1) / chunks; ++ch) {
            const float* src = in + static_cast<size_t>(ch) * h * w;
            float* dst = out + static_cast<size_t>(ch) * oh * ow;
            for (int y = 0; y < oh; ++y) {
                const int y0 = std::max(0, y * stride - pad), y1 = std::min(h, y * stride - pad + k);
                float* r = row.data() + pad;
                const float* s0 = src + static_cast<size_t>(y0) * w;
                int yy = y0 + 1;
                if (y0 >= y1) {
                    for (int x = 0; x < w; ++x) r[x] = kLow;
                } else if (yy + 1 < y1) {  // the first three rows in one pass
                    const float *s1 = s0 + w, *s2 = s1 + w;
                    for (int x = 0; x < w; ++x) {
                        const float m = s0[x] > s1[x] ? s0[x] : s1[x];
                        r[x] = m > s2[x] ? m : s2[x];
                    }
                    yy += 2;
                } else {
                    for (int x = 0; x < w; ++x) r[x] = s0[x];
                }
                for (; yy < y1; ++yy) {
                    const float* sr = src + static_cast<size_t>(yy) * w;
                    for (int x = 0; x < w; ++x) r[x] = r[x] > sr[x] ? r[x] : sr[x];
                }
                float* d = dst + static_cast<size_t>(y) * ow;
                int x = 0;
                if (stride == 2)
                    for (; x + L <= ow; x += L) {
                        const float* b = row.data() + 2 * x;
                        simd::vec<L> m, odd;
                        simd::load_even_odd<L>(b, m, odd);  // columns 2x, 2x + 1
                        if (k > 1) m = simd::vmax<L>(m, odd);
                        for (int kx = 2; kx < k; kx += 2) {
                            simd::vec<L> e, o;
                            simd::load_even_odd<L>(b + kx, e, o);  // columns 2x + kx, 2x + kx + 1
                            m = simd::vmax<L>(m, e);
                            if (kx + 1 < k) m = simd::vmax<L>(m, o);
                        }
                        simd::store<L>(d + x, m);
                    }
                for (int xx = x; xx < ow; ++xx) d[xx] = row[static_cast<size_t>(xx) * stride];
                for (int kx = 1; kx < k; ++kx)
                    for (int xx = x; xx < ow; ++xx) {
                        const float v = row[static_cast<size_t>(xx) * stride + kx];
                        d[xx] = d[xx] > v ? d[xx] : v;
                    }
            }
        }
    });
}

void global_avg_pool(const float* in, int c, int hw, float* out, ThreadPool& pool) {
    constexpr int L = JCW_LANES;
    const int chunks = std::min(c, pool.size());
    pool.parallel_for(chunks, [&](int i) {
        for (int ch = c * i / chunks; ch < c * (i + 1) / chunks; ++ch) {
            const float* src = in + static_cast<size_t>(ch) * hw;
            simd::vec<L> acc = simd::splat<L>(0.f);
            int j = 0;
            for (; j + L <= hw; j += L) acc += simd::load<L>(src + j);
            float s = 0.f;
            for (int l = 0; l < L; ++l) s += acc[l];
            for (; j < hw; ++j) s += src[j];
            out[ch] = s / static_cast<float>(hw);
        }
    });
}

void add_act(const float* a, const float* b, size_t n, Act act, float* out) {
    constexpr int chunk = 1 << 30;
    for (size_t i = 0; i < n; i += chunk)
        simd::emit<JCW_LANES>(a + i, b + i, out + i, static_cast<int>(std::min<size_t>(chunk, n - i)), act);
}

void act_apply(const float* in, size_t n, Act act, float* out) {
    constexpr int chunk = 1 << 30;
    for (size_t i = 0; i < n; i += chunk)
        simd::emit<JCW_LANES>(in + i, nullptr, out + i, static_cast<int>(std::min<size_t>(chunk, n - i)), act);
}

void mul(const float* a, const float* b, size_t n, float* out) {
    constexpr int L = JCW_LANES;
    size_t i = 0;
    for (; i + L <= n; i += L) simd::store<L>(out + i, simd::load<L>(a + i) * simd::load<L>(b + i));
    for (; i < n; ++i) out[i] = a[i] * b[i];
}

void scale_channels(const float* in, const float* s, int c, int hw, float* out, ThreadPool& pool) {
    constexpr int L = JCW_LANES;
    const int chunks = std::min(c, pool.size());
    pool.parallel_for(chunks, [&](int part) {
        for (int ch = c * part / chunks; ch < c * (part + 1) / chunks; ++ch) {
            const float* src = in + static_cast<size_t>(ch) * hw;
            float* dst = out + static_cast<size_t>(ch) * hw;
            const float k = s[ch];
            int i = 0;
            for (; i + L <= hw; i += L) simd::store<L>(dst + i, simd::load<L>(src + i) * k);
            for (; i < hw; ++i) dst[i] = src[i] * k;
        }
    });
}

// Per output row: the column-wise sum of its kernel rows into a zero padded row buffer
// (contiguous, vectorised), then the sum over each output's kernel columns, times 1 / divisor.
void avg_pool2d(const float* in, int c, int h, int w, int kh, int kw, int sh, int sw, int pt, int pl, int pb, int pr,
                bool count_include_pad, float* out, ThreadPool& pool) {
    const int oh = (h + pt + pb - kh) / sh + 1, ow = (w + pl + pr - kw) / sw + 1;
    const int wp = std::max(w + pl + pr, (ow - 1) * sw + kw);
    // 1 / divisor per output row and column: the window's rows times its columns.
    std::vector<float> row_n(oh), col_n(ow);
    for (int y = 0; y < oh; ++y)
        row_n[y] = static_cast<float>(count_include_pad ? kh : std::min(h, y * sh - pt + kh) - std::max(0, y * sh - pt));
    for (int x = 0; x < ow; ++x)
        col_n[x] = static_cast<float>(count_include_pad ? kw : std::min(w, x * sw - pl + kw) - std::max(0, x * sw - pl));
    std::vector<float> inv_col(ow);
    for (int x = 0; x < ow; ++x) inv_col[x] = col_n[x] > 0 ? 1.f / col_n[x] : 0.f;
    const int chunks = std::min(c, pool.size() * 4);
    pool.parallel_for(chunks, [&](int i) {
        std::vector<float> row(wp, 0.f);
        for (int ch = c * i / chunks; ch < c * (i + 1) / chunks; ++ch) {
            const float* src = in + static_cast<size_t>(ch) * h * w;
            float* dst = out + static_cast<size_t>(ch) * oh * ow;
            for (int y = 0; y < oh; ++y) {
                const int y0 = std::max(0, y * sh - pt), y1 = std::min(h, y * sh - pt + kh);
                float* r = row.data() + pl;
                for (int x = 0; x < w; ++x) r[x] = 0.f;
                for (int yy = y0; yy < y1; ++yy) {
                    const float* sr = src + static_cast<size_t>(yy) * w;
                    for (int x = 0; x < w; ++x) r[x] += sr[x];
                }
                float* d = dst + static_cast<size_t>(y) * ow;
                for (int x = 0; x < ow; ++x) d[x] = row[static_cast<size_t>(x) * sw];
                for (int kx = 1; kx < kw; ++kx)
                    for (int x = 0; x < ow; ++x) d[x] += row[static_cast<size_t>(x) * sw + kx];
                const float inv_row = row_n[y] > 0 ? 1.f / row_n[y] : 0.f;
                for (int x = 0; x < ow; ++x) d[x] *= inv_row * inv_col[x];
            }
        }
    });
}

}  // namespace jcw
