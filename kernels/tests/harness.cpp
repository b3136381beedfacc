// Standalone kernel check: every kernel variant this CPU runs (kernel_variants(): the ISA variants
// built in, then the portable scalar kernels) vs jcw::conv2d_reference, on random inputs.
// Exit status 0 when every case agrees; prints one line per failing case.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "ops.h"
#include "reference.h"
#include "kernel_set.h"  // kernels/src: the microkernels of each variant, called directly below

namespace {

struct Case {
    int in_ch, out_ch, h, w, k, stride, pad, groups;
    double density;
    jcw::Act act;
    bool residual;
    jcw::ConvMode mode;
};

std::mt19937 rng(1234);

std::vector<float> randn(size_t n) {
    std::normal_distribution<float> d(0.f, 1.f);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// Zeroes whole 4x1 blocks (4 output channels at one input position) to reach ~density.
void prune_blocks(std::vector<float>& w, int out_ch, int per_oc, double density) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int r = 0; r < (out_ch + 3) / 4; ++r)
        for (int j = 0; j < per_oc; ++j)
            if (u(rng) >= density)
                for (int i = 0; i < 4 && 4 * r + i < out_ch; ++i) w[static_cast<size_t>(4 * r + i) * per_oc + j] = 0.f;
}

float act_ref(double v, jcw::Act a) {
    if (a != jcw::Act::None && v < 0) v = 0;
    if (a == jcw::Act::Relu6 && v > 6) v = 6;
    return static_cast<float>(v);
}

double max_rel_err(const std::vector<float>& got, const std::vector<float>& want) {
    double scale = 1e-6, err = 0;
    for (float v : want) scale = std::max(scale, static_cast<double>(std::fabs(v)));
    for (size_t i = 0; i < got.size(); ++i) {
        if (!std::isfinite(got[i])) return INFINITY;
        err = std::max(err, std::fabs(static_cast<double>(got[i]) - want[i]));
    }
    return err / scale;
}

int check_conv(const Case& c, int threads) {
    const int icg = c.in_ch / c.groups;
    auto w = randn(static_cast<size_t>(c.out_ch) * icg * c.k * c.k);
    prune_blocks(w, c.out_ch, icg * c.k * c.k, c.density);
    auto b = randn(c.out_ch);
    auto x = randn(static_cast<size_t>(c.in_ch) * c.h * c.w);
    jcw::ConvShape s{1, c.in_ch, c.h, c.w, c.out_ch, c.k, c.k, c.stride, c.stride, c.pad, c.pad, c.groups};
    const size_t n_out = static_cast<size_t>(c.out_ch) * s.out_h() * s.out_w();
    std::vector<float> want(n_out);
    jcw::conv2d_reference(s, x.data(), w.data(), b.data(), want.data());
    auto res = randn(n_out);
    for (size_t i = 0; i < n_out; ++i) want[i] = act_ref(static_cast<double>(want[i]) + (c.residual ? res[i] : 0.0), c.act);

    jcw::Conv2d conv(w.data(), b.data(), c.out_ch, c.in_ch, c.k, c.k, c.stride, c.pad, c.groups, c.act, c.mode);
    jcw::ThreadPool pool(threads);
    std::vector<float> scratch(conv.scratch_floats(c.h, c.w, threads) + 1);
    int failures = 0;
    for (const std::string& variant : jcw::kernel_variants()) {
        jcw::set_kernel_variant(variant);
        // In-place residual: out starts as the residual.
        std::vector<float> out = c.residual ? res : std::vector<float>(n_out, NAN);
        conv.run(x.data(), c.h, c.w, out.data(), c.residual ? out.data() : nullptr, scratch.data(), pool);
        const double err = max_rel_err(out, want);
        if (err > 1e-5) {
            std::printf("FAIL conv %s (%s) in=%d out=%d %dx%d k=%d s=%d p=%d g=%d density=%.2f threads=%d err=%.3g\n",
                        variant.c_str(), conv.kernel_name(c.h, c.w, threads).c_str(), c.in_ch, c.out_ch, c.h, c.w, c.k, c.stride, c.pad, c.groups,
                        c.density, threads, err);
            ++failures;
        }
    }
    jcw::set_kernel_variant(jcw::kernel_variants().front());
    return failures;
}

int check_linear(int in_f, int out_f, double density, int threads) {
    auto w = randn(static_cast<size_t>(out_f) * in_f);
    prune_blocks(w, out_f, in_f, density);
    auto b = randn(out_f);
    auto x = randn(in_f);
    std::vector<float> want(out_f);
    for (int o = 0; o < out_f; ++o) {
        double acc = b[o];
        for (int i = 0; i < in_f; ++i) acc += static_cast<double>(w[static_cast<size_t>(o) * in_f + i]) * x[i];
        want[o] = act_ref(acc, jcw::Act::Relu);
    }
    int failures = 0;
    jcw::ThreadPool pool(threads);
    for (auto mode : {jcw::ConvMode::Dense, jcw::ConvMode::Sparse}) {
        jcw::Linear fc(w.data(), b.data(), out_f, in_f, jcw::Act::Relu, mode);
        std::vector<float> out(out_f, NAN);
        fc.run(x.data(), out.data(), pool);
        if (max_rel_err(out, want) > 1e-5) {
            std::printf("FAIL linear in=%d out=%d density=%.2f sparse=%d\n", in_f, out_f, density, fc.sparse());
            ++failures;
        }
    }
    return failures;
}

int check_pools(int threads) {
    jcw::ThreadPool pool(threads);
    const int c = 5, h = 9, w = 11;
    auto x = randn(static_cast<size_t>(c) * h * w);
    const int oh = (h + 2 - 3) / 2 + 1, ow = (w + 2 - 3) / 2 + 1;
    std::vector<float> mp(static_cast<size_t>(c) * oh * ow), gap(c);
    jcw::max_pool2d(x.data(), c, h, w, 3, 2, 1, mp.data(), pool);
    jcw::global_avg_pool(x.data(), c, h * w, gap.data(), pool);
    int failures = 0;
    for (int ch = 0; ch < c; ++ch) {
        double sum = 0;
        for (int i = 0; i < h * w; ++i) sum += x[static_cast<size_t>(ch) * h * w + i];
        if (std::fabs(sum / (h * w) - gap[ch]) > 1e-5) ++failures;
        for (int y = 0; y < oh; ++y)
            for (int xx = 0; xx < ow; ++xx) {
                float m = -INFINITY;
                for (int dy = 0; dy < 3; ++dy)
                    for (int dx = 0; dx < 3; ++dx) {
                        const int iy = 2 * y - 1 + dy, ix = 2 * xx - 1 + dx;
                        if (iy >= 0 && iy < h && ix >= 0 && ix < w) m = std::max(m, x[(static_cast<size_t>(ch) * h + iy) * w + ix]);
                    }
                if (m != mp[(static_cast<size_t>(ch) * oh + y) * ow + xx]) ++failures;
            }
    }
    std::vector<float> a = randn(37), bb = randn(37), out(37);
    jcw::add_act(a.data(), bb.data(), a.size(), jcw::Act::Relu6, out.data());
    for (size_t i = 0; i < a.size(); ++i)
        if (std::fabs(out[i] - act_ref(static_cast<double>(a[i]) + bb[i], jcw::Act::Relu6)) > 1e-6) ++failures;
    if (failures) std::printf("FAIL pools/add threads=%d (%d mismatches)\n", threads, failures);
    return failures;
}


// The 4x1-block tile microkernel of every variant called directly (KernelSet::conv), at each of
// its lane counts and both loop orders, on a 1x1 convolution read in place (offset of block b =
// its input channel x hw): rows with 0, odd and even block counts, a pixel count that is no
// multiple of any tile, ReLU.  Checked against plain loops in double.
int check_tile_microkernel() {
    const int in_ch = 23, out_ch = 18, hw = 53, rows = (out_ch + 3) / 4;
    auto x = randn(static_cast<size_t>(in_ch) * hw);
    std::vector<float> packed;
    std::vector<int32_t> row_start{0}, off;
    std::vector<std::vector<float>> wfull(out_ch, std::vector<float>(in_ch, 0.f));
    std::vector<float> bias = randn(static_cast<size_t>(rows) * 4);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int r = 0; r < rows; ++r) {
        for (int i = 0; i < 4; ++i) packed.push_back(bias[4 * r + i]);
        const double keep = r == 1 ? 0.0 : r == 2 ? 1.0 : 0.5;  // row 1 empty, row 2 dense
        for (int c = 0; c < in_ch; ++c) {
            if (u(rng) >= keep) continue;
            auto w = randn(4);
            for (int i = 0; i < 4; ++i) {
                packed.push_back(w[i]);
                if (4 * r + i < out_ch) wfull[4 * r + i][c] = w[i];
            }
            off.push_back(c * hw);
        }
        row_start.push_back(static_cast<int32_t>(off.size()));
    }
    off.push_back(0), off.push_back(0);  // the padding the planner adds (two offsets past the end)
    std::vector<double> want(static_cast<size_t>(out_ch) * hw);
    for (int o = 0; o < out_ch; ++o)
        for (int p = 0; p < hw; ++p) {
            double acc = bias[o];
            for (int c = 0; c < in_ch; ++c) acc += static_cast<double>(wfull[o][c]) * x[static_cast<size_t>(c) * hw + p];
            want[static_cast<size_t>(o) * hw + p] = acc > 0 ? acc : 0;
        }
    jcw::Geometry g;
    g.ho = 1, g.wo = hw, g.wv = hw, g.hw = hw, g.qend = hw, g.base = x.data();
    int n = 0, failures = 0;
    const jcw::KernelSet* const* sets = jcw::runnable_kernel_sets(&n);
    for (int s = 0; s < n; ++s)
        for (int lanes : {sets[s]->lanes, 4, 1}) {
            if (lanes > sets[s]->lanes || (lanes == 4 && sets[s]->lanes < 4)) continue;
            for (bool rows_outer : {false, true}) {
                std::vector<float> out(want.size(), NAN);
                sets[s]->conv(lanes, g, 0, hw, 0, rows, rows_outer, packed.data(), row_start.data(), off.data(), out_ch,
                              out.data(), nullptr, jcw::Act::Relu);
                std::vector<float> wantf(want.begin(), want.end());
                const double err = max_rel_err(out, wantf);
                if (err > 1e-5) {
                    std::printf("FAIL tile microkernel %s lanes=%d rows_outer=%d err=%.3g\n", sets[s]->name, lanes,
                                rows_outer, err);
                    ++failures;
                }
            }
        }
    return failures;
}

}  // namespace

int main() {
    using jcw::Act;
    using M = jcw::ConvMode;
    const Case cases[] = {
        {24, 36, 13, 13, 1, 1, 0, 1, 0.3, Act::Relu, false, M::Auto},
        {17, 10, 9, 7, 1, 1, 0, 1, 1.0, Act::None, true, M::Auto},
        {32, 19, 21, 21, 1, 1, 0, 1, 0.2, Act::Relu6, true, M::Sparse},
        {16, 24, 15, 15, 1, 2, 0, 1, 0.5, Act::Relu, false, M::Auto},
        {8, 12, 11, 11, 3, 1, 1, 1, 0.5, Act::Relu, false, M::Auto},
        {13, 7, 10, 9, 3, 1, 1, 1, 1.0, Act::Relu6, true, M::Dense},
        {12, 16, 17, 17, 3, 2, 1, 1, 0.3, Act::None, false, M::Auto},
        {8, 9, 6, 6, 3, 1, 1, 1, 0.0, Act::Relu, false, M::Auto},
        {6, 8, 19, 19, 7, 2, 3, 1, 1.0, Act::Relu, false, M::Auto},
        {8, 12, 9, 9, 3, 1, 1, 2, 1.0, Act::None, false, M::Auto},
        {10, 10, 16, 16, 3, 1, 1, 10, 1.0, Act::Relu6, false, M::Auto},
        {12, 12, 15, 13, 3, 2, 1, 12, 1.0, Act::Relu, true, M::Auto},
        {5, 5, 3, 3, 3, 1, 1, 5, 1.0, Act::None, false, M::Auto},
        {6, 10, 2, 3, 3, 1, 1, 1, 0.6, Act::None, true, M::Auto},
        {96, 22, 5, 6, 3, 1, 1, 1, 0.7, Act::Relu, true, M::Auto},
        {20, 20, 14, 14, 3, 1, 1, 20, 1.0, Act::Relu6, true, M::Auto},
        {20, 20, 29, 29, 3, 2, 1, 20, 1.0, Act::None, false, M::Auto},
        {16, 16, 28, 30, 3, 2, 1, 16, 1.0, Act::Relu6, true, M::Auto},
        {8, 8, 5, 5, 5, 2, 2, 8, 1.0, Act::Relu, false, M::Auto},
        {12, 12, 9, 13, 3, 1, 1, 12, 1.0, Act::Relu, true, M::Auto},
        {300, 30, 6, 5, 1, 1, 0, 1, 0.9, Act::Relu6, false, M::Auto},
        // depthwise 3x3: row pairs and single rows, widths around the vector lengths, in-place residual
        {5, 5, 5, 33, 3, 1, 1, 5, 1.0, Act::Relu, true, M::Auto},
        {7, 7, 4, 16, 3, 1, 1, 7, 1.0, Act::None, true, M::Auto},
        {3, 3, 1, 17, 3, 1, 1, 3, 1.0, Act::Relu6, true, M::Auto},
        {6, 6, 7, 35, 3, 2, 1, 6, 1.0, Act::None, true, M::Auto},
        {4, 4, 2, 9, 3, 2, 1, 4, 1.0, Act::Relu, true, M::Auto},
        {9, 9, 14, 64, 3, 2, 1, 9, 1.0, Act::Relu6, true, M::Auto},
        // dense 1x1 on small images: vectorised over output channels (block tails, pixel tails)
        {40, 37, 7, 7, 1, 1, 0, 1, 1.0, Act::Relu, true, M::Dense},
        {64, 50, 8, 8, 1, 1, 0, 1, 1.0, Act::Relu6, false, M::Auto},
        {3, 5, 2, 2, 1, 1, 0, 1, 1.0, Act::None, true, M::Auto},
    };
    int failures = 0, total = 0;
    for (int threads : {1, 2}) {
        for (const Case& c : cases) {
            failures += check_conv(c, threads);
            ++total;
        }
        for (double d : {0.0, 0.4, 1.0}) failures += check_linear(37, 21, d, threads);
        failures += check_pools(threads);
    }
    failures += check_tile_microkernel();
    std::string variants;
    for (const std::string& v : jcw::kernel_variants()) variants += (variants.empty() ? "" : ",") + v;
    std::printf("%s: %d conv cases x %zu kernel variants (%s) x 2 thread counts, picked %s (isa=%s lanes=%d), %d failures\n",
                failures ? "FAILED" : "OK", total / 2, jcw::kernel_variants().size(), variants.c_str(),
                jcw::kernel_variant().c_str(), jcw::isa(), jcw::simd_lanes(), failures);
    return failures ? 1 : 0;
}
