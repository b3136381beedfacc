// Conv2d weight packing: 4x1 blocks (4 output channels at one input position), bias first per
// block row, all-zero blocks dropped in sparse mode (docs/kernels.md, "Packing format").
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "conv_plan.h"
#include "ops.h"

namespace jcw {

namespace {
// Blocks kept below this fraction run on the sparse (block-skipping) packing in Auto mode.
// Measured: the packed stream with every block kept runs the same micro-kernel, so skipping is
// never slower; the cut-off only keeps exactly-dense layers on the dense packing.
constexpr double kAutoSparseBelow = 1.0;
}  // namespace

Conv2d::Conv2d(const float* weight, const float* bias, int out_ch, int in_ch, int kh, int kw, int stride, int pad,
               int groups, Act act, ConvMode mode)
    : plan_cache_(std::make_shared<PlanCache>()), out_ch_(out_ch), in_ch_(in_ch), kh_(kh), kw_(kw), stride_(stride), pad_(pad), groups_(groups), act_(act) {
    if (!weight) throw std::invalid_argument("Conv2d: weight is null");
    if (out_ch < 1 || in_ch < 1 || kh < 1 || kw < 1 || stride < 1 || pad < 0 || groups < 1)
        throw std::invalid_argument("Conv2d: need out_ch, in_ch, kh, kw, stride, groups >= 1 and pad >= 0");
    if (in_ch % groups || out_ch % groups)
        throw std::invalid_argument("Conv2d: in_ch " + std::to_string(in_ch) + " and out_ch " + std::to_string(out_ch) +
                                    " must be divisible by groups " + std::to_string(groups));
    bias_.assign(out_ch, 0.f);
    if (bias) std::copy(bias, bias + out_ch, bias_.begin());
    const int icg = in_ch / groups, ocg = out_ch / groups, taps = kh * kw;
    if (groups > 1 && groups == in_ch && out_ch == in_ch) {
        depthwise_ = true;
        dw_.assign(weight, weight + static_cast<size_t>(out_ch) * taps);
        return;
    }
    // Position code c = ic * taps + t; weight of (oc, c) in the full (ungrouped) matrix.
    const int codes = in_ch * taps;
    auto wat = [&](int oc, int c) -> float {
        if (oc >= out_ch) return 0.f;
        const int ic = c / taps, g = oc / ocg;
        if (ic / icg != g) return 0.f;
        return weight[(static_cast<size_t>(oc) * icg + (ic - g * icg)) * taps + c % taps];
    };
    rows_ = (out_ch + 3) / 4;
    size_t nonzero = 0;
    std::vector<uint8_t> keep(static_cast<size_t>(rows_) * codes, 0);
    for (int r = 0; r < rows_; ++r)
        for (int c = 0; c < codes; ++c) {
            bool nz = false;
            for (int i = 0; i < 4; ++i) nz |= wat(4 * r + i, c) != 0.f;
            keep[static_cast<size_t>(r) * codes + c] = nz;
            nonzero += nz;
        }
    // Density counts blocks of the real (grouped) weight only.
    const double all_blocks = static_cast<double>(rows_) * icg * taps;
    density_ = static_cast<double>(nonzero) / all_blocks;
    sparse_ = mode == ConvMode::Sparse || (mode == ConvMode::Auto && density_ < kAutoSparseBelow);
    row_start_.assign(rows_ + 1, 0);
    for (int r = 0; r < rows_; ++r) {
        for (int i = 0; i < 4; ++i) packed_.push_back(4 * r + i < out_ch ? bias_[4 * r + i] : 0.f);
        for (int c = 0; c < codes; ++c) {
            bool in_group = false;  // dense packing keeps every block of the grouped weight
            for (int i = 0; i < 4 && 4 * r + i < out_ch; ++i) in_group |= (c / taps) / icg == (4 * r + i) / ocg;
            if (sparse_ ? !keep[static_cast<size_t>(r) * codes + c] : !in_group) continue;
            for (int i = 0; i < 4; ++i) packed_.push_back(wat(4 * r + i, c));
            codes_.push_back(c);
        }
        row_start_[r + 1] = static_cast<int32_t>(codes_.size());
    }
    if (!sparse_) density_ = 1.0;
}

// First block row of part i of n, balancing per-row work (blocks + a fixed per-row cost).
int Conv2d::row_split(int i, int n) const {
    if (i <= 0) return 0;
    if (i >= n) return rows_;
    const double per_row = 8.0;
    const double total = row_start_[rows_] + per_row * rows_, goal = total * i / n;
    int r = 0;
    while (r < rows_ && row_start_[r + 1] + per_row * (r + 1) <= goal) ++r;
    return r;
}

std::vector<float> pack_dense_rows(const float* packed, const int32_t* row_start, const int32_t* codes, int positions,
                                   int out_ch, int rows) {
    const int groups = (out_ch + rows - 1) / rows;
    std::vector<float> w(static_cast<size_t>(groups) * rows * (positions + 1), 0.f);
    for (int oc = 0; oc < out_ch; ++oc) {  // row r = [4 biases][its blocks x 4 weights]
        const int r = oc / 4, i = oc % 4;
        const float* row = packed + 4 * (static_cast<size_t>(row_start[r]) + r);
        float* dst = w.data() + static_cast<size_t>(oc / rows) * rows * (positions + 1) + oc % rows;
        dst[0] = row[i];
        for (int b = row_start[r]; b < row_start[r + 1]; ++b)
            dst[static_cast<size_t>(codes[b] + 1) * rows] = row[4 * (b - row_start[r] + 1) + i];
    }
    return w;
}

std::vector<float> channel_pack(const float* packed, const int32_t* row_start, int out_ch, int in_ch,
                                const float* bias, int lanes, std::vector<float>& cv_bias) {
    const int L = lanes;
    const int blocks = (out_ch + L - 1) / L;
    std::vector<float> w(static_cast<size_t>(blocks) * in_ch * L, 0.f);
    cv_bias.assign(static_cast<size_t>(blocks) * L, 0.f);
    std::copy(bias, bias + out_ch, cv_bias.begin());
    for (int oc = 0; oc < out_ch; ++oc) {  // dense groups-1 packing: row r holds every c in order
        const int r = oc / 4, i = oc % 4;
        const float* row = packed + 4 * (static_cast<size_t>(row_start[r]) + r) + 4;
        float* dst = w.data() + static_cast<size_t>(oc / L) * in_ch * L + oc % L;
        for (int ic = 0; ic < in_ch; ++ic) dst[static_cast<size_t>(ic) * L] = row[4 * ic + i];
    }
    return w;
}

}  // namespace jcw
