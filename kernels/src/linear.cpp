// Linear (fully connected) layer for one input vector: dense rows or 4x1 blocks along outputs.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "block_gemv.h"
#include "ops.h"
#include "simd.h"

namespace jcw {

namespace {
constexpr double kLinearSparseBelow = 0.45;
}  // namespace

Linear::Linear(const float* weight, const float* bias, int out_f, int in_f, Act act, ConvMode mode)
    : out_f_(out_f), in_f_(in_f), act_(act) {
    if (!weight) throw std::invalid_argument("Linear: weight is null");
    if (out_f < 1 || in_f < 1) throw std::invalid_argument("Linear: need out_f >= 1 and in_f >= 1");
    bias_.assign(out_f, 0.f);
    if (bias) std::copy(bias, bias + out_f, bias_.begin());
    rows_ = (out_f + 3) / 4;
    auto wat = [&](int o, int i) { return o < out_f ? weight[static_cast<size_t>(o) * in_f + i] : 0.f; };
    size_t kept = 0;
    for (int r = 0; r < rows_; ++r)
        for (int i = 0; i < in_f; ++i) {
            bool nz = false;
            for (int j = 0; j < 4; ++j) nz |= wat(4 * r + j, i) != 0.f;
            kept += nz;
        }
    density_ = static_cast<double>(kept) / (static_cast<double>(rows_) * in_f);
    // Measured (1280 -> 1000, one thread, AVX-512): 4x1 blocks win below block density ~0.43
    // (0.4: 0.070 vs 0.076 ms dense; 0.5: 0.087 vs 0.076 ms).
    sparse_ = mode == ConvMode::Sparse || (mode == ConvMode::Auto && density_ < kLinearSparseBelow);
    if (!sparse_) {
        packed_.assign(weight, weight + static_cast<size_t>(out_f) * in_f);
        density_ = 1.0;
        return;
    }
    row_start_.assign(rows_ + 1, 0);
    for (int r = 0; r < rows_; ++r) {
        for (int j = 0; j < 4; ++j) packed_.push_back(4 * r + j < out_f ? bias_[4 * r + j] : 0.f);
        for (int i = 0; i < in_f; ++i) {
            bool nz = false;
            for (int j = 0; j < 4; ++j) nz |= wat(4 * r + j, i) != 0.f;
            if (!nz) continue;
            for (int j = 0; j < 4; ++j) packed_.push_back(wat(4 * r + j, i));
            cols_.push_back(i);
        }
        row_start_[r + 1] = static_cast<int32_t>(cols_.size());
    }
}

void Linear::run(const float* in, float* out, ThreadPool& pool) const {
    constexpr int L = JCW_LANES;
    const int chunks = std::min(rows_, pool.size());
    pool.parallel_for(chunks, [&](int part) {
        const int r0 = rows_ * part / chunks, r1 = rows_ * (part + 1) / chunks;
        for (int r = r0; r < r1; ++r) {
            float y[4];
            if (sparse_) {
                block_row_gemv(packed_.data(), row_start_.data(), cols_.data(), in, r, y);
            } else {
                for (int j = 0; j < 4; ++j) {
                    const int o = 4 * r + j;
                    if (o >= out_f_) break;
                    const float* w = packed_.data() + static_cast<size_t>(o) * in_f_;
                    // Four independent sums (one chain waits on the add latency), the row read ahead of
                    // use: a classifier's weights are megabytes that the network's other layers have
                    // evicted (1024 -> 1000 in mobilenet_v1: 0.45 ms in-network before, docs/kernels.md).
                    simd::vec<L> acc = simd::splat<L>(0.f), acc1 = acc, acc2 = acc, acc3 = acc;
                    int i = 0;
                    for (; i + 4 * L <= in_f_; i += 4 * L) {
                        __builtin_prefetch(w + i + 256);
                        acc += simd::load<L>(w + i) * simd::load<L>(in + i);
                        acc1 += simd::load<L>(w + i + L) * simd::load<L>(in + i + L);
                        acc2 += simd::load<L>(w + i + 2 * L) * simd::load<L>(in + i + 2 * L);
                        acc3 += simd::load<L>(w + i + 3 * L) * simd::load<L>(in + i + 3 * L);
                    }
                    acc += acc1 + acc2 + acc3;
                    for (; i + L <= in_f_; i += L) acc += simd::load<L>(w + i) * simd::load<L>(in + i);
                    float s = bias_[o];
                    for (int l = 0; l < L; ++l) s += acc[l];
                    for (; i < in_f_; ++i) s += w[i] * in[i];
                    y[j] = s;
                }
            }
            const int n = std::min(4, out_f_ - 4 * r);
            simd::emit<1>(y, nullptr, out + 4 * r, n, act_);
        }
    });
}

}  // namespace jcw
