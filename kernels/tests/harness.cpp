// Standalone kernel check: every kernel variant this CPU runs (kernel_variants(): the ISA variants
// built in, then the portable scalar kernels) vs jcw::conv2d_reference, on random inputs; every
// epilogue activation (ops.h Act) on every conv path; the elementwise, pooling, scale and concat
// ops, and a small network through the executor (concat slices, squeeze-excitation scale) against
// plain loops.  Exit status 0 when every case agrees; prints one line per failing case.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "executor.h"
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
    constexpr double kPi = 3.14159265358979323846;
    auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
    switch (a.kind) {
        case jcw::ActKind::None: break;
        case jcw::ActKind::Relu: v = std::max(v, 0.0); break;
        case jcw::ActKind::Relu6: v = std::min(std::max(v, 0.0), 6.0); break;
        case jcw::ActKind::HardSwish: v *= std::min(std::max(v / 6 + 0.5, 0.0), 1.0); break;
        case jcw::ActKind::HardSigmoid: v = std::min(std::max(a.alpha * v + a.beta, 0.0), 1.0); break;
        case jcw::ActKind::Sigmoid: v = sigmoid(v); break;
        case jcw::ActKind::Silu: v *= sigmoid(v); break;
        case jcw::ActKind::LeakyRelu: v = v < 0 ? a.alpha * v : v; break;
        case jcw::ActKind::Gelu: v = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); break;
        case jcw::ActKind::GeluTanh: v = 0.5 * v * (1 + std::tanh(std::sqrt(2 / kPi) * (v + 0.044715 * v * v * v))); break;
    }
    return static_cast<float>(v);
}

// The activations beyond ReLU / ReLU6, with the parameters torch exports.
const jcw::Act kMoreActs[] = {jcw::Act::HardSwish, jcw::Act(jcw::Act::HardSigmoid, 1.f / 6, 0.5f), jcw::Act::Sigmoid,
                              jcw::Act::Silu, jcw::Act(jcw::Act::LeakyRelu, 0.1f, 0.f), jcw::Act::Gelu,
                              jcw::Act::GeluTanh};

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
            std::printf("FAIL conv %s (%s) in=%d out=%d %dx%d k=%d s=%d p=%d g=%d density=%.2f act=%s threads=%d err=%.3g\n",
                        variant.c_str(), conv.kernel_name(c.h, c.w, threads).c_str(), c.in_ch, c.out_ch, c.h, c.w, c.k, c.stride, c.pad, c.groups,
                        c.density, jcw::act_name(c.act), threads, err);
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
    int failures = 0;
    // Max pool: widths from below one vector to several (the stride-2 path runs vectors of outputs
    // from the even / odd lanes, then a tail), kernels 2, 3, 5, strides 1 and 2.
    struct PoolCase {
        int c, h, w, k, s, p;
    };
    for (const PoolCase& q : {PoolCase{5, 9, 11, 3, 2, 1}, PoolCase{3, 7, 37, 3, 2, 1}, PoolCase{2, 6, 40, 2, 2, 0},
                              PoolCase{2, 8, 23, 5, 2, 2}, PoolCase{2, 5, 19, 3, 1, 1}}) {
        auto x = randn(static_cast<size_t>(q.c) * q.h * q.w);
        const int oh = (q.h + 2 * q.p - q.k) / q.s + 1, ow = (q.w + 2 * q.p - q.k) / q.s + 1;
        std::vector<float> mp(static_cast<size_t>(q.c) * oh * ow);
        jcw::max_pool2d(x.data(), q.c, q.h, q.w, q.k, q.s, q.p, mp.data(), pool);
        for (int ch = 0; ch < q.c; ++ch)
            for (int y = 0; y < oh; ++y)
                for (int xx = 0; xx < ow; ++xx) {
                    float m = -INFINITY;
                    for (int dy = 0; dy < q.k; ++dy)
                        for (int dx = 0; dx < q.k; ++dx) {
                            const int iy = q.s * y - q.p + dy, ix = q.s * xx - q.p + dx;
                            if (iy >= 0 && iy < q.h && ix >= 0 && ix < q.w)
                                m = std::max(m, x[(static_cast<size_t>(ch) * q.h + iy) * q.w + ix]);
                        }
                    if (m != mp[(static_cast<size_t>(ch) * oh + y) * ow + xx]) ++failures;
                }
    }
    const int c = 5, h = 9, w = 11;
    auto x = randn(static_cast<size_t>(c) * h * w);
    std::vector<float> gap(c);
    jcw::global_avg_pool(x.data(), c, h * w, gap.data(), pool);
    for (int ch = 0; ch < c; ++ch) {
        double sum = 0;
        for (int i = 0; i < h * w; ++i) sum += x[static_cast<size_t>(ch) * h * w + i];
        if (std::fabs(sum / (h * w) - gap[ch]) > 1e-5) ++failures;
    }
    std::vector<float> a = randn(37), bb = randn(37), out(37);
    jcw::add_act(a.data(), bb.data(), a.size(), jcw::Act::Relu6, out.data());
    for (size_t i = 0; i < a.size(); ++i)
        if (std::fabs(out[i] - act_ref(static_cast<double>(a[i]) + bb[i], jcw::Act::Relu6)) > 1e-6) ++failures;
    if (failures) std::printf("FAIL pools/add threads=%d (%d mismatches)\n", threads, failures);
    return failures;
}

// act_apply (the act step) on values from -100 to 100 and random ones: every activation, against
// double precision; |error| <= 2e-6 max(1, |want|) (exp / erf are polynomials).
int check_activations() {
    std::vector<float> x;
    for (int i = -2000; i <= 2000; ++i) x.push_back(i * 0.05f);
    for (float v : randn(333)) x.push_back(3 * v);
    int failures = 0;
    std::vector<jcw::Act> acts = {jcw::Act::None, jcw::Act::Relu, jcw::Act::Relu6};
    acts.insert(acts.end(), std::begin(kMoreActs), std::end(kMoreActs));
    for (const jcw::Act& a : acts) {
        std::vector<float> out(x.size(), NAN);
        jcw::act_apply(x.data(), x.size(), a, out.data());
        double worst = 0;
        for (size_t i = 0; i < x.size(); ++i) {
            const double want = act_ref(x[i], a);
            const double err = std::fabs(out[i] - want) / std::max(1.0, std::fabs(want));
            worst = std::isfinite(out[i]) ? std::max(worst, err) : INFINITY;
        }
        if (worst > 2e-6) {
            std::printf("FAIL act_apply %s err=%.3g\n", jcw::act_name(a), worst);
            ++failures;
        }
        // In place, an odd count (vector tails).
        std::vector<float> y(x.begin(), x.begin() + 45);
        jcw::act_apply(y.data(), y.size(), a, y.data());
        for (size_t i = 0; i < y.size(); ++i)
            if (y[i] != out[i]) {
                std::printf("FAIL act_apply %s in place\n", jcw::act_name(a));
                ++failures;
                break;
            }
    }
    return failures;
}

// mul, scale_channels and avg_pool2d (square and rectangular windows, asymmetric pads, with and
// without count_include_pad) against plain loops.
int check_elementwise_and_avg_pool(int threads) {
    jcw::ThreadPool pool(threads);
    int failures = 0;
    auto a = randn(101), b = randn(101);
    std::vector<float> m(101);
    jcw::mul(a.data(), b.data(), a.size(), m.data());
    for (size_t i = 0; i < a.size(); ++i) failures += m[i] != a[i] * b[i];
    jcw::mul(a.data(), b.data(), a.size(), a.data());  // in place
    for (size_t i = 0; i < a.size(); ++i) failures += a[i] != m[i];
    const int c = 7, h = 9, w = 11;
    auto x = randn(static_cast<size_t>(c) * h * w), s = randn(c);
    std::vector<float> sc(x.size());
    jcw::scale_channels(x.data(), s.data(), c, h * w, sc.data(), pool);
    for (size_t i = 0; i < x.size(); ++i) failures += sc[i] != x[i] * s[i / (h * w)];
    jcw::scale_channels(x.data(), s.data(), c, h * w, x.data(), pool);  // in place
    for (size_t i = 0; i < x.size(); ++i) failures += x[i] != sc[i];
    if (failures) std::printf("FAIL mul / scale_channels threads=%d (%d mismatches)\n", threads, failures);
    struct Pool {
        int kh, kw, sh, sw, pt, pl, pb, pr;
    };
    const Pool pools[] = {{3, 3, 1, 1, 1, 1, 1, 1}, {3, 3, 2, 2, 1, 1, 1, 1}, {2, 2, 2, 2, 0, 0, 0, 0},
                          {3, 2, 2, 1, 0, 1, 2, 0}, {5, 5, 3, 2, 2, 2, 2, 2}, {1, 1, 1, 1, 0, 0, 0, 0}};
    for (const Pool& p : pools)
        for (bool include : {true, false}) {
            const int oh = (h + p.pt + p.pb - p.kh) / p.sh + 1, ow = (w + p.pl + p.pr - p.kw) / p.sw + 1;
            std::vector<float> out(static_cast<size_t>(c) * oh * ow, NAN);
            jcw::avg_pool2d(sc.data(), c, h, w, p.kh, p.kw, p.sh, p.sw, p.pt, p.pl, p.pb, p.pr, include, out.data(), pool);
            std::vector<float> want(out.size());
            for (int ch = 0; ch < c; ++ch)
                for (int y = 0; y < oh; ++y)
                    for (int xx = 0; xx < ow; ++xx) {
                        double sum = 0;
                        int n = 0;
                        for (int dy = 0; dy < p.kh; ++dy)
                            for (int dx = 0; dx < p.kw; ++dx) {
                                const int iy = y * p.sh - p.pt + dy, ix = xx * p.sw - p.pl + dx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                sum += sc[(static_cast<size_t>(ch) * h + iy) * w + ix];
                                ++n;
                            }
                        want[(static_cast<size_t>(ch) * oh + y) * ow + xx] =
                            static_cast<float>(sum / (include ? p.kh * p.kw : n));
                    }
            if (max_rel_err(out, want) > 1e-5) {
                std::printf("FAIL avg_pool2d k=%dx%d s=%dx%d pads=%d,%d,%d,%d count_include_pad=%d threads=%d\n", p.kh,
                            p.kw, p.sh, p.sw, p.pt, p.pl, p.pb, p.pr, include, threads);
                ++failures;
            }
        }
    return failures;
}

// A network through the executor: two conv branches (hardswish, sigmoid) concatenated with the
// network input and with a nested concat (its producers write into slices of the output, the
// input is copied), a squeeze-excitation gate (global average pool -> 1x1 conv relu -> 1x1 conv
// hardsigmoid -> per-channel scale), an elementwise mul, silu and an average pool; against the
// same computation by plain loops.  Checks that the concat copies only the network input.
int check_network(int threads) {
    const int c = 3, h = 9, w = 10, ca = 5, cb = 4, cd = 2;
    const int ct = ca + cb + cd + c, cse = 4;
    auto x = randn(static_cast<size_t>(c) * h * w);
    auto wa = randn(static_cast<size_t>(ca) * c * 9), ba = randn(ca);
    auto wb = randn(static_cast<size_t>(cb) * c), bb = randn(cb);
    auto wd = randn(static_cast<size_t>(cd) * c * 9), bd = randn(cd);
    auto w1 = randn(static_cast<size_t>(cse) * ct), b1 = randn(cse);
    auto w2 = randn(static_cast<size_t>(ct) * cse), b2 = randn(ct);
    prune_blocks(wa, ca, c * 9, 0.5);
    const jcw::Act hsig(jcw::Act::HardSigmoid, 1.f / 6, 0.5f);
    // Reference.
    auto conv_ref = [&](const std::vector<float>& in, int cin, const std::vector<float>& wt, const std::vector<float>& bs,
                        int cout, int k, jcw::Act act, int hh, int ww) {
        jcw::ConvShape s{1, cin, hh, ww, cout, k, k, 1, 1, k / 2, k / 2, 1};
        std::vector<float> out(static_cast<size_t>(cout) * hh * ww);
        jcw::conv2d_reference(s, in.data(), wt.data(), bs.data(), out.data());
        for (float& v : out) v = act_ref(v, act);
        return out;
    };
    const auto ya = conv_ref(x, c, wa, ba, ca, 3, jcw::Act::HardSwish, h, w);
    const auto yb = conv_ref(x, c, wb, bb, cb, 1, jcw::Act::Sigmoid, h, w);
    const auto yd = conv_ref(x, c, wd, bd, cd, 3, jcw::Act::None, h, w);
    std::vector<float> cat(ya);
    cat.insert(cat.end(), yb.begin(), yb.end());
    cat.insert(cat.end(), yd.begin(), yd.end());
    cat.insert(cat.end(), x.begin(), x.end());
    const int hw = h * w;
    std::vector<float> gap(ct);
    for (int ch = 0; ch < ct; ++ch) {
        double sum = 0;
        for (int i = 0; i < hw; ++i) sum += cat[static_cast<size_t>(ch) * hw + i];
        gap[ch] = static_cast<float>(sum / hw);
    }
    const auto s1 = conv_ref(gap, ct, w1, b1, cse, 1, jcw::Act::Relu, 1, 1);
    const auto s2 = conv_ref(s1, cse, w2, b2, ct, 1, hsig, 1, 1);
    std::vector<float> se(cat.size()), prod(cat.size());
    for (size_t i = 0; i < cat.size(); ++i) se[i] = cat[i] * s2[i / hw];
    for (size_t i = 0; i < cat.size(); ++i) prod[i] = act_ref(static_cast<double>(se[i]) * cat[i], jcw::Act::Silu);
    const int oh = (h + 2 - 3) / 2 + 1, ow = (w + 2 - 3) / 2 + 1;
    std::vector<float> want(static_cast<size_t>(ct) * oh * ow);
    for (int ch = 0; ch < ct; ++ch)
        for (int y = 0; y < oh; ++y)
            for (int xx = 0; xx < ow; ++xx) {
                double sum = 0;
                for (int dy = 0; dy < 3; ++dy)
                    for (int dx = 0; dx < 3; ++dx) {
                        const int iy = 2 * y - 1 + dy, ix = 2 * xx - 1 + dx;
                        if (iy >= 0 && iy < h && ix >= 0 && ix < w) sum += prod[(static_cast<size_t>(ch) * h + iy) * w + ix];
                    }
                want[(static_cast<size_t>(ch) * oh + y) * ow + xx] = static_cast<float>(sum / 9);
            }
    // The network.
    jcw::Network net(c, h, w, threads);
    const auto M = jcw::ConvMode::Auto;
    const int a = net.conv("a", 0, wa.data(), ba.data(), ca, 3, 3, 1, 1, 1, jcw::Act::HardSwish, M);
    const int bv = net.conv("b", 0, wb.data(), bb.data(), cb, 1, 1, 1, 0, 1, jcw::Act::None, M);
    const int bs = net.act("b.sigmoid", bv, jcw::Act::Sigmoid);
    const int inner = net.concat("inner", {a, bs});
    const int d = net.conv("d", 0, wd.data(), bd.data(), cd, 3, 3, 1, 1, 1, jcw::Act::None, M);
    const int cv = net.concat("cat", {inner, d, 0});
    const int g = net.global_avg_pool("gap", cv);
    const int g1 = net.conv("se1", g, w1.data(), b1.data(), cse, 1, 1, 1, 0, 1, jcw::Act::Relu, M);
    const int g2 = net.conv("se2", g1, w2.data(), b2.data(), ct, 1, 1, 1, 0, 1, hsig, M);
    const int sev = net.mul("se", cv, g2);
    const int pv = net.mul("prod", sev, cv);
    const int sv = net.act("silu", pv, jcw::Act::Silu);
    net.set_output(net.avg_pool("pool", sv, 3, 3, 2, 2, 1, 1, 1, 1, true));
    std::vector<float> out(want.size(), NAN);
    net.run(x.data(), 1, out.data());
    int failures = 0;
    const double err = max_rel_err(out, want);
    if (err > 1e-5) {
        std::printf("FAIL network (concat, squeeze-excitation, avg pool) threads=%d err=%.3g\n", threads, err);
        ++failures;
    }
    for (const jcw::StepInfo& st : net.steps()) {
        const int expect = st.name == "cat" ? 1 : 0;  // the network input
        if (st.op == "concat" && st.copied != expect) {
            std::printf("FAIL network: concat %s copied %d inputs, expected %d\n", st.name.c_str(), st.copied, expect);
            ++failures;
        }
        if (st.name == "se" && st.op != "scale") {
            std::printf("FAIL network: se ran as %s, not scale\n", st.op.c_str());
            ++failures;
        }
    }
    return failures;
}

// The 4x1-block tile microkernel of every variant called directly (KernelSet::conv), at each of
// its lane counts and both loop orders, on a 1x1 convolution read in place (offset of block b =
// its input channel x hw): rows with 0, odd and even block counts, a pixel count that is no
// multiple of any tile, ReLU.  Checked against plain loops in double.
int check_tile_microkernel(int hw);

int check_tile_microkernel() {
    int failures = 0;
    // 53: whole tiles, 2- and 1-vector tiles, an overlapped last vector; with 16 lanes 48 / 49 /
    // 50 and 113 (64 + 49): 3 vectors with 0 / 1 / 2 positions riding along; 65 / 131 / 196 (64 +
    // 1, 128 + 3, 192 + 4): the last whole tile carries them; 64 / 69: none ride.
    for (const int hw : {53, 48, 49, 50, 113, 18, 65, 131, 196, 64, 69}) failures += check_tile_microkernel(hw);
    return failures;
}

int check_tile_microkernel(int hw) {
    const int in_ch = 23, out_ch = 18, rows = (out_ch + 3) / 4;
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
            if (lanes > sets[s]->lanes || (lanes == 4 && sets[s]->lanes < 4) || hw < lanes) continue;
            for (bool rows_outer : {false, true}) {
                std::vector<float> out(want.size(), NAN);
                sets[s]->conv(lanes, g, 0, hw, 0, rows, rows_outer, packed.data(), row_start.data(), off.data(), out_ch,
                              out.data(), nullptr, jcw::Act::Relu);
                std::vector<float> wantf(want.begin(), want.end());
                const double err = max_rel_err(out, wantf);
                if (err > 1e-5) {
                    std::printf("FAIL tile microkernel %s hw=%d lanes=%d rows_outer=%d err=%.3g\n", sets[s]->name, hw,
                                lanes, rows_outer, err);
                    ++failures;
                }
            }
        }
    return failures;
}

// The dense register tile of every variant that has one (KernelSet::dense), called directly on a
// dense 1x1 convolution read in place, both loop orders, with a last group short of rows, a pixel
// count that is no multiple of any tile and a residual; weights laid out by hand in the documented
// format (per group: its biases, then per input position its weights).  Plain loops in double.
int check_dense_microkernel(int hw, int& tried);

int check_dense_microkernel() {
    int failures = 0, tried = 0;
    // 83: whole tiles, 1-vector tiles and an overlapped last vector; 48 / 96: whole tiles only;
    // 49 / 50 / 98: the last 1 or 2 positions ride along with the last whole tile.
    for (const int hw : {83, 48, 96, 49, 50, 98, 17}) failures += check_dense_microkernel(hw, tried);
    std::printf("dense microkernel: %d (variant, pixel count) pairs checked\n", tried);
    return failures;
}

int check_dense_microkernel(int hw, int& tried) {
    const int in_ch = 21, out_ch = 19;
    auto x = randn(static_cast<size_t>(in_ch) * hw);
    auto w = randn(static_cast<size_t>(out_ch) * in_ch);
    auto bias = randn(out_ch);
    auto res = randn(static_cast<size_t>(out_ch) * hw);
    std::vector<int32_t> off;
    for (int c = 0; c < in_ch; ++c) off.push_back(c * hw);
    off.push_back(0), off.push_back(0);
    std::vector<float> want(static_cast<size_t>(out_ch) * hw);
    for (int o = 0; o < out_ch; ++o)
        for (int p = 0; p < hw; ++p) {
            double acc = bias[o] + static_cast<double>(res[static_cast<size_t>(o) * hw + p]);
            for (int c = 0; c < in_ch; ++c) acc += static_cast<double>(w[static_cast<size_t>(o) * in_ch + c]) * x[static_cast<size_t>(c) * hw + p];
            want[static_cast<size_t>(o) * hw + p] = static_cast<float>(acc > 0 ? acc : 0);
        }
    jcw::Geometry g;
    g.ho = 1, g.wo = hw, g.wv = hw, g.hw = hw, g.qend = hw, g.base = x.data();
    int n = 0, failures = 0;
    const jcw::KernelSet* const* sets = jcw::runnable_kernel_sets(&n);
    for (int s = 0; s < n; ++s) {
        const int R = sets[s]->dense_rows;
        if (R > 0 && hw < sets[s]->lanes) continue;  // needs qend >= L
        if (R == 0) continue;
        ++tried;
        const int groups = (out_ch + R - 1) / R;
        std::vector<float> wd(static_cast<size_t>(groups) * R * (in_ch + 1), 0.f);
        for (int o = 0; o < out_ch; ++o) {
            float* dst = wd.data() + static_cast<size_t>(o / R) * R * (in_ch + 1) + o % R;
            dst[0] = bias[o];
            for (int c = 0; c < in_ch; ++c) dst[static_cast<size_t>(c + 1) * R] = w[static_cast<size_t>(o) * in_ch + c];
        }
        for (bool rows_outer : {false, true}) {
            std::vector<float> out(want.size(), NAN);
            sets[s]->dense(g, 0, hw, 0, groups, rows_outer, wd.data(), in_ch, off.data(), out_ch, out.data(), res.data(),
                           jcw::Act::Relu);
            const double err = max_rel_err(out, want);
            if (err > 1e-5) {
                std::printf("FAIL dense microkernel %s hw=%d rows_outer=%d err=%.3g\n", sets[s]->name, hw, rows_outer, err);
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
        // 1x1 on a single pixel (matrix-vector product over the blocks)
        {96, 23, 1, 1, 1, 1, 0, 1, 0.3, Act::Relu6, true, M::Auto},
        {9, 40, 1, 1, 1, 1, 0, 1, 1.0, Act::None, false, M::Dense},
        // depthwise 5x5 stride 1 on flattened channels (masks), 7x7 stride 1 and 5x5 stride 2 on planes
        {9, 9, 7, 7, 5, 1, 2, 9, 1.0, Act::Relu, true, M::Auto},
        {5, 5, 13, 18, 5, 1, 2, 5, 1.0, Act::None, false, M::Auto},
        {4, 4, 9, 11, 7, 1, 3, 4, 1.0, Act::Relu6, true, M::Auto},
        {6, 6, 15, 15, 5, 2, 2, 6, 1.0, Act::Relu, false, M::Auto},
        // depthwise 3x3: row pairs and single rows, widths around the vector lengths, in-place residual
        {5, 5, 5, 33, 3, 1, 1, 5, 1.0, Act::Relu, true, M::Auto},
        {7, 7, 4, 16, 3, 1, 1, 7, 1.0, Act::None, true, M::Auto},
        {3, 3, 1, 17, 3, 1, 1, 3, 1.0, Act::Relu6, true, M::Auto},
        {6, 6, 7, 35, 3, 2, 1, 6, 1.0, Act::None, true, M::Auto},
        {4, 4, 2, 9, 3, 2, 1, 4, 1.0, Act::Relu, true, M::Auto},
        {9, 9, 14, 64, 3, 2, 1, 9, 1.0, Act::Relu6, true, M::Auto},
        // depthwise 3x3 stride 1 without residual: the in-order (neon_a53) assembly loop's trip counts
        // (T = w / 8 trips: 2, 3, 5, 7, 14) and its three activations, odd and even heights
        {2, 2, 4, 16, 3, 1, 1, 2, 1.0, Act::Relu, false, M::Auto},
        {2, 2, 5, 23, 3, 1, 1, 2, 1.0, Act::Relu, false, M::Auto},
        {3, 3, 7, 31, 3, 1, 1, 3, 1.0, Act::Relu6, false, M::Auto},
        {3, 3, 6, 40, 3, 1, 1, 3, 1.0, Act::None, false, M::Auto},
        {4, 4, 9, 56, 3, 1, 1, 4, 1.0, Act::Relu6, false, M::Auto},
        {2, 2, 8, 112, 3, 1, 1, 2, 1.0, Act::Relu, false, M::Auto},
        // and stride 2 without residual: its trip counts (T = w / 16: 2, 3, 4, 7), odd widths, each activation
        {3, 3, 7, 32, 3, 2, 1, 3, 1.0, Act::Relu, false, M::Auto},
        {2, 2, 9, 47, 3, 2, 1, 2, 1.0, Act::None, false, M::Auto},
        {2, 2, 6, 48, 3, 2, 1, 2, 1.0, Act::Relu6, false, M::Auto},
        {2, 2, 5, 64, 3, 2, 1, 2, 1.0, Act::Relu, false, M::Auto},
        {2, 2, 7, 112, 3, 2, 1, 2, 1.0, Act::Relu6, false, M::Auto},
        // dense 1x1 on small images: vectorised over output channels (block tails, pixel tails)
        {40, 37, 7, 7, 1, 1, 0, 1, 1.0, Act::Relu, true, M::Dense},
        {64, 50, 8, 8, 1, 1, 0, 1, 1.0, Act::Relu6, false, M::Auto},
        {3, 5, 2, 2, 1, 1, 0, 1, 1.0, Act::None, true, M::Auto},
    };
    int failures = 0, total = 0;
    const int n_cases = static_cast<int>(sizeof(cases) / sizeof(cases[0]));
    const int n_more = static_cast<int>(sizeof(kMoreActs) / sizeof(kMoreActs[0]));
    for (int threads : {1, 2}) {
        for (const Case& c : cases) {
            failures += check_conv(c, threads);
            ++total;
        }
        // Every conv path again with one of the other activations in its epilogue (each activation
        // on several paths, the cases shifted between thread counts).
        for (int i = 0; i < n_cases; ++i) {
            Case c = cases[i];
            c.act = kMoreActs[(i + threads) % n_more];
            failures += check_conv(c, threads);
        }
        for (double d : {0.0, 0.4, 1.0}) failures += check_linear(37, 21, d, threads);
        failures += check_pools(threads);
        failures += check_elementwise_and_avg_pool(threads);
        failures += check_network(threads);
    }
    failures += check_activations();
    failures += check_tile_microkernel();
    failures += check_dense_microkernel();
    std::string variants;
    for (const std::string& v : jcw::kernel_variants()) variants += (variants.empty() ? "" : ",") + v;
    std::printf("%s: %d conv cases (each also with one of %d more activations) x %zu kernel variants (%s) x 2 thread "
                "counts, activations, elementwise / pool / concat / squeeze-excitation ops, picked %s (isa=%s lanes=%d), "
                "%d failures\n",
                failures ? "FAILED" : "OK", total / 2, n_more, jcw::kernel_variants().size(), variants.c_str(),
                jcw::kernel_variant().c_str(), jcw::isa(), jcw::simd_lanes(), failures);
    return failures ? 1 : 0;
}
