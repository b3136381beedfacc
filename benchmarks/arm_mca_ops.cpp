// Driver for benchmarks/arm_mca.py, second part: what latency/devicemodel.py needs beyond the conv
// kernels at ReLU (arm_mca_driver.cpp), at the engine's NEON parameters:
//
// - The depthwise kernel on padded planes, depthwise_range (every depthwise conv but 3x3 pad 1:
//   MobileNetV3's and EfficientNet's 5x5), taps read at run time, ReLU epilogue.
// - The engine's activations (simd::activate) in an epilogue: 4 independent vectors per iteration,
//   load, activation, store, in the instance the engine runs for each (M = false for the ReLU
//   class, true for the others), the activation a compile-time constant as ReLU is in the first
//   driver (steady state: the engine picks the activation once per call).  The conv kernels'
//   measured overheads hold ReLU's epilogue; another activation costs the difference per output
//   vector.  (Instantiating the kernels themselves with M = true does not give it: their epilogue
//   becomes a loop of its own, which the inner-loop / overhead split does not see.)
// - The elementwise loops of the engine's non-conv steps, one vector of 4 floats per iteration:
//   act (pool.cpp act_apply: simd::emit of the activation), add (add_act: simd::emit of a + b and
//   ReLU), mul (pool.cpp mul), scale (pool.cpp scale_channels, the squeeze-excitation gate), copy
//   (a concatenation's copy of an input that is not written in place, a memcpy in executor.cpp),
//   sum (pool.cpp global_avg_pool's running vector).  mul, scale, copy and sum are written out
//   here as pool.cpp / executor.cpp have them (their functions take a thread pool and are not
//   header code).
//
// Nothing here is linked or run: only the generated assembly is read.
#include <cstdint>

#include "../kernels/src/micro/depthwise.h"
#include "../kernels/src/micro/tile_4x1.h"

#define JCW_MCA extern "C" __attribute__((noinline, flatten))

namespace jcw {

namespace {
using V = simd::vec<JCW_LANES>;
constexpr int L = JCW_LANES;
}  // namespace

// Depthwise on padded planes, taps at run time (5x5 pad 2 here): a 14x14 output, rows of 4 vectors.
JCW_MCA void mca_dw_range(const float* planes, int c1, int plane_floats, const int32_t* tap_off, int taps,
                          const float* dw, const float* bias, float* out) {
    Geometry g;
    g.ho = 14, g.wo = 14, g.wv = 18, g.hw = 14 * 14, g.qend = 13 * 18 + 14, g.base = planes;
    depthwise_range<L, 0, false>(g, 0, c1, plane_floats, tap_off, taps, dw, bias, out, nullptr, Act::Relu);
}

// Epilogue: activation KIND on 4 independent vectors (one row of 4 output channels of a tile, or
// the vectors a depthwise kernel stores together) between a load and a store; M as the engine
// instantiates the kernels for KIND.  The act step: simd::emit_range as act_apply runs it.
#define JCW_ACT(NAME, KIND, M)                                                                                     \
    JCW_MCA void mca_epi_##NAME(const float* in, float* out, int n) {                                              \
        for (int i = 0; i + 4 * L <= n; i += 4 * L) {                                                              \
            const V a = simd::load<L>(in + i), b = simd::load<L>(in + i + L), c = simd::load<L>(in + i + 2 * L),   \
                    d = simd::load<L>(in + i + 3 * L);                                                             \
            simd::store<L>(out + i, simd::activate<L, M>(a, Act::KIND));                                           \
            simd::store<L>(out + i + L, simd::activate<L, M>(b, Act::KIND));                                       \
            simd::store<L>(out + i + 2 * L, simd::activate<L, M>(c, Act::KIND));                                   \
            simd::store<L>(out + i + 3 * L, simd::activate<L, M>(d, Act::KIND));                                   \
        }                                                                                                          \
    }                                                                                                              \
    JCW_MCA void mca_act_##NAME(const float* in, float* out, int n) {                                              \
        simd::emit_range<L, M>(in, nullptr, out, n, Act::KIND);                                                    \
    }
JCW_ACT(relu, Relu, false)
JCW_ACT(relu6, Relu6, false)
JCW_ACT(hardswish, HardSwish, true)
JCW_ACT(hardsigmoid, HardSigmoid, true)
JCW_ACT(sigmoid, Sigmoid, true)
JCW_ACT(silu, Silu, true)
JCW_ACT(gelu, Gelu, true)
JCW_ACT(leaky_relu, LeakyRelu, true)

// Residual add with its ReLU: out = relu(a + b) (add_act).
JCW_MCA void mca_add(const float* a, const float* b, float* out, int n) {
    simd::emit_range<L, false>(a, b, out, n, Act::Relu);
}

// Elementwise multiply of two tensors of one shape (pool.cpp mul).
JCW_MCA void mca_mul(const float* a, const float* b, float* out, int n) {
    for (int i = 0; i + L <= n; i += L) simd::store<L>(out + i, simd::load<L>(a + i) * simd::load<L>(b + i));
}

// Squeeze-excitation scale of one channel plane: out = in * s (pool.cpp scale_channels).
JCW_MCA void mca_scale(const float* in, float s, float* out, int hw) {
    for (int i = 0; i + L <= hw; i += L) simd::store<L>(out + i, simd::load<L>(in + i) * s);
}

// A concatenation's copy of one input into its channel slice of the output.
JCW_MCA void mca_copy(const float* in, float* out, int n) {
    for (int i = 0; i + L <= n; i += L) simd::store<L>(out + i, simd::load<L>(in + i));
}

// Average pooling's sums: a running vector of input vectors (pool.cpp global_avg_pool).
JCW_MCA float mca_sum(const float* in, int n) {
    V acc = simd::splat<L>(0.f);
    for (int i = 0; i + L <= n; i += L) acc += simd::load<L>(in + i);
    float s = 0.f;
    for (int l = 0; l < L; ++l) s += acc[l];
    return s;
}

}  // namespace jcw
