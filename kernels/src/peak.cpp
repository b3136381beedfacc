// Name parsing for the op enums and the FMA peak probe.
#include <chrono>
#include <stdexcept>

#include "ops.h"
#include "simd.h"

namespace jcw {

Act act_from_name(const std::string& name) {
    if (name == "none") return Act::None;
    if (name == "relu") return Act::Relu;
    if (name == "relu6") return Act::Relu6;
    throw std::invalid_argument("act must be 'none', 'relu' or 'relu6', got '" + name + "'");
}

ConvMode mode_from_name(const std::string& name) {
    if (name == "auto") return ConvMode::Auto;
    if (name == "sparse") return ConvMode::Sparse;
    if (name == "dense") return ConvMode::Dense;
    throw std::invalid_argument("mode must be 'auto', 'sparse' or 'dense', got '" + name + "'");
}

namespace {
// 16 independent accumulator chains hide FMA latency on every supported core.
template <int L>
__attribute__((noinline)) float fma_burst(long iters, float a, float b) {
    constexpr int K = 16;
    simd::vec<L> acc[K];
    for (int k = 0; k < K; ++k) acc[k] = simd::splat<L>(static_cast<float>(k) * 1e-3f);
    const simd::vec<L> va = simd::splat<L>(a), vb = simd::splat<L>(b);
    for (long i = 0; i < iters; ++i)
        for (int k = 0; k < K; ++k) acc[k] = acc[k] * va + vb;
    simd::vec<L> s = acc[0];
    for (int k = 1; k < K; ++k) s += acc[k];
    return s[0];
}
}  // namespace

double measure_fma_peak_gflops(double seconds) {
    using clock = std::chrono::steady_clock;
    constexpr int L = JCW_LANES;
    long iters = 1 << 16;
    volatile float sink = 0.f;
    double best = 0.0;
    const auto stop = clock::now() + std::chrono::duration<double>(seconds);
    while (clock::now() < stop) {
        const auto t0 = clock::now();
        sink = sink + fma_burst<L>(iters, 0.999f, 1e-4f);
        const double dt = std::chrono::duration<double>(clock::now() - t0).count();
        best = std::max(best, 2.0 * 16 * L * static_cast<double>(iters) / dt * 1e-9);
        if (dt < 0.01) iters *= 2;
    }
    return best;
}

}  // namespace jcw
