// Driver for benchmarks/arm_mca.py, second part: the loops of the non-conv ops, the activations and
// the conv paths the first driver (arm_mca_driver.cpp) leaves out, for latency/devicemodel.py.
//
// Two kinds of functions, each noinline extern "C" so its assembly (-S) holds one loop:
//
// - The engine's own depthwise_range at the NEON parameters: the depthwise path for every kernel
//   other than 3x3 pad 1 (MobileNetV3's and EfficientNet's 5x5), on padded planes, taps read at
//   run time.  (Convs on a 1x1 output, squeeze-excitation's, need nothing new: the plane is padded
//   to a whole tile, run_positions, and the 4-lane tile_rows of the first driver runs it.)
// - Loops written for the purpose, because main's engine has no NEON code for them yet (the
//   engine branch adds it): one vector of 4 floats per iteration, the way the engine's
//   elementwise ops walk memory (simd::emit): act (load, activation, store), add (two loads, add,
//   ReLU, store), mul (two loads, multiply, store), scale (load, multiply by the channel's gate,
//   store: squeeze-excitation), copy (load, store: a concatenation's copy), sum (load, add into a
//   running vector: average pooling); and epi, the activation applied to 4 independent vectors
//   (one row of 4 output channels of a tile's epilogue) between a load and a store.  The
//   activations are written here with the usual vector formulas: hardswish x * clamp(x / 6 + 1/2,
//   0, 1), hardsigmoid clamp(x / 6 + 1/2, 0, 1), sigmoid 1 / (1 + exp(-x)) with exp by the Cephes
//   expf reduction (x = n ln2 + r, a degree-5 polynomial in r, 2^n built in the exponent bits),
//   silu x * sigmoid(x), gelu x / 2 * (1 + erf(x / sqrt 2)) with erf by the rational
//   approximation of Eigen / XLA (degree 13 / 8 in x, x clamped to [-4, 4]), leaky_relu
//   x < 0 ? 0.01 x : x.  When the engine's own NEON activations land, this part should call them
//   instead (and arm_mca.py be re-run).
//
// Nothing here is linked or run: only the generated assembly is read.
#include <cstdint>

#include "../kernels/src/micro/depthwise.h"

#define JCW_MCA extern "C" __attribute__((noinline, flatten))

namespace jcw {
namespace mca {

using simd::vec;
using V = vec<JCW_LANES>;

inline V splat(float x) { return simd::splat<JCW_LANES>(x); }
inline V vmax(V a, V b) { return a > b ? a : b; }
inline V vmin(V a, V b) { return a < b ? a : b; }
inline V clamp01(V v) { return vmin(vmax(v, splat(0.f)), splat(1.f)); }

inline V vexp(V x) {
    typedef int32_t I __attribute__((vector_size(JCW_LANES * sizeof(int32_t))));
    x = vmin(vmax(x, splat(-87.3f)), splat(88.3f));
    const V magic = splat(12582912.f);  // 1.5 * 2^23: adding it rounds to an integer
    const V n = (x * 1.44269504f + magic) - magic;
    V r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    V y = splat(1.9875691500e-4f);
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * (r * r) + r + 1.f;
    const I bits = (__builtin_convertvector(n, I) + 127) << 23;
    V p;
    __builtin_memcpy(&p, &bits, sizeof(p));
    return y * p;
}

inline V sigmoid(V x) { return 1.f / (1.f + vexp(-x)); }

inline V verf(V x) {
    x = vmin(vmax(x, splat(-4.f)), splat(4.f));
    const V x2 = x * x;
    V p = splat(-2.72614225801306e-10f);
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 + -2.10102402082508e-06f;
    p = p * x2 + -5.69250639462346e-05f;
    p = p * x2 + -7.34990630326855e-04f;
    p = p * x2 + -2.95459980854025e-03f;
    p = p * x2 + -1.60960333262415e-02f;
    V q = splat(-1.45660718464996e-05f);
    q = q * x2 + -2.13374055278905e-04f;
    q = q * x2 + -1.68282697438203e-03f;
    q = q * x2 + -7.37332916720468e-03f;
    q = q * x2 + -1.42647390514189e-02f;
    return x * p / q;
}

struct Relu { static V f(V v) { return vmax(v, splat(0.f)); } };
struct Relu6 { static V f(V v) { return vmin(vmax(v, splat(0.f)), splat(6.f)); } };
struct HardSwish { static V f(V v) { return v * clamp01(v * (1.f / 6.f) + 0.5f); } };
struct HardSigmoid { static V f(V v) { return clamp01(v * (1.f / 6.f) + 0.5f); } };
struct Sigmoid { static V f(V v) { return sigmoid(v); } };
struct Silu { static V f(V v) { return v * sigmoid(v); } };
struct Gelu { static V f(V v) { return v * 0.5f * (1.f + verf(v * 0.70710678118654752f)); } };
struct LeakyRelu { static V f(V v) { return v < splat(0.f) ? v * 0.01f : v; } };

// act op: out = act(in), one vector per iteration.
template <class A>
inline void act_loop(const float* in, float* out, int n) {
    for (int i = 0; i + JCW_LANES <= n; i += JCW_LANES) simd::store<JCW_LANES>(out + i, A::f(simd::load<JCW_LANES>(in + i)));
}

// Epilogue: the activation on 4 independent vectors (one tile row) between load and store.
template <class A>
inline void epi_loop(const float* in, float* out, int n) {
    constexpr int L = JCW_LANES;
    for (int i = 0; i + 4 * L <= n; i += 4 * L) {
        V a = simd::load<L>(in + i), b = simd::load<L>(in + i + L), c = simd::load<L>(in + i + 2 * L),
          d = simd::load<L>(in + i + 3 * L);
        simd::store<L>(out + i, A::f(a));
        simd::store<L>(out + i + L, A::f(b));
        simd::store<L>(out + i + 2 * L, A::f(c));
        simd::store<L>(out + i + 3 * L, A::f(d));
    }
}

}  // namespace mca

#define JCW_ACT(NAME, A)                                                                                           \
    JCW_MCA void mca_act_##NAME(const float* in, float* out, int n) { mca::act_loop<mca::A>(in, out, n); }        \
    JCW_MCA void mca_epi_##NAME(const float* in, float* out, int n) { mca::epi_loop<mca::A>(in, out, n); }
JCW_ACT(relu, Relu)
JCW_ACT(relu6, Relu6)
JCW_ACT(hardswish, HardSwish)
JCW_ACT(hardsigmoid, HardSigmoid)
JCW_ACT(sigmoid, Sigmoid)
JCW_ACT(silu, Silu)
JCW_ACT(gelu, Gelu)
JCW_ACT(leaky_relu, LeakyRelu)

// Residual add with its ReLU: out = relu(a + b).
JCW_MCA void mca_add(const float* a, const float* b, float* out, int n) {
    for (int i = 0; i + JCW_LANES <= n; i += JCW_LANES)
        simd::store<JCW_LANES>(out + i, mca::Relu::f(simd::load<JCW_LANES>(a + i) + simd::load<JCW_LANES>(b + i)));
}

// Elementwise multiply of two tensors of one shape.
JCW_MCA void mca_mul(const float* a, const float* b, float* out, int n) {
    for (int i = 0; i + JCW_LANES <= n; i += JCW_LANES)
        simd::store<JCW_LANES>(out + i, simd::load<JCW_LANES>(a + i) * simd::load<JCW_LANES>(b + i));
}

// Squeeze-excitation scale of one channel plane: out = in * s.
JCW_MCA void mca_scale(const float* in, float s, float* out, int hw) {
    for (int i = 0; i + JCW_LANES <= hw; i += JCW_LANES)
        simd::store<JCW_LANES>(out + i, simd::load<JCW_LANES>(in + i) * s);
}

// A concatenation's copy of one input into its channel slice of the output.
JCW_MCA void mca_copy(const float* in, float* out, int n) {
    for (int i = 0; i + JCW_LANES <= n; i += JCW_LANES) simd::store<JCW_LANES>(out + i, simd::load<JCW_LANES>(in + i));
}

// Average pooling's sums: a running vector of input vectors.
JCW_MCA float mca_sum(const float* in, int n) {
    mca::V acc = mca::splat(0.f);
    for (int i = 0; i + JCW_LANES <= n; i += JCW_LANES) acc += simd::load<JCW_LANES>(in + i);
    float s = 0.f;
    for (int l = 0; l < JCW_LANES; ++l) s += acc[l];
    return s;
}

// Depthwise on padded planes, taps at run time (5x5 pad 2 here): a 14x14 output, rows of 4 vectors.
JCW_MCA void mca_dw_range(const float* planes, int c1, int plane_floats, const int32_t* tap_off, int taps,
                          const float* dw, const float* bias, float* out) {
    Geometry g;
    g.ho = 14, g.wo = 14, g.wv = 18, g.hw = 14 * 14, g.qend = 13 * 18 + 14, g.base = planes;
    depthwise_range<JCW_LANES, 0>(g, 0, c1, plane_floats, tap_off, taps, dw, bias, out, nullptr, Act::Relu);
}

}  // namespace jcw
