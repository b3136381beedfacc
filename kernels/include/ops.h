// Inference ops of the sparse engine: one image at a time, CHW float32, weights packed once.
//
// Conv2d packs dense OIHW weights into 4x1 blocks (4 consecutive output channels at one
// (in_ch, ky, kx) position).  In sparse mode all-zero blocks are dropped; in dense mode every
// block is kept.  Per block row (4 output channels) the packed stream is: bias (4 floats), then
// the row's block values (4 floats each); a per-row block count and a per-block position code
// (in_ch * kh * kw + ky * kw + kx) sit beside it.  At run time the position codes are turned into
// pre-scaled input offsets (in floats) for the current input size, written into the caller's
// scratch, and a register-tiled micro-kernel walks output pixels (see docs/kernels.md).
//
// Contracts for every run():
//   - `in`, `out`, `residual` are CHW of one image; `out` must not alias `in`; `residual` may be
//     null or alias `out` (in-place residual add is safe).
//   - `scratch` holds at least scratch_floats(in_h, in_w, pool.size()) floats (may be null when
//     that is 0); it is clobbered, and should start on a 64-byte boundary (speed only).  Ops are
//     const and may run concurrently with distinct scratch buffers.
//   - The epilogue is out = act(conv + bias + residual), act any Act (below).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <map>
#include <string>
#include <vector>

namespace jcw {

// Activation of an epilogue or an act step (definitions as in ONNX):
//   Relu max(x, 0); Relu6 min(max(x, 0), 6); HardSigmoid max(0, min(1, alpha x + beta));
//   HardSwish x * max(0, min(1, x / 6 + 1/2)); Sigmoid 1 / (1 + exp(-x)); Silu x * sigmoid(x);
//   LeakyRelu x < 0 ? alpha x : x; Gelu x / 2 * (1 + erf(x / sqrt 2)); GeluTanh x / 2 * (1 +
//   tanh(sqrt(2 / pi) (x + 0.044715 x^3))).  The SIMD epilogues (simd.h) compute exp and erf with
//   polynomials (relative error of sigmoid about 1e-7, absolute error of erf below 5e-7).
enum class ActKind { None, Relu, Relu6, HardSwish, HardSigmoid, Sigmoid, Silu, LeakyRelu, Gelu, GeluTanh };
struct Act {
    ActKind kind = ActKind::None;
    float alpha = 0.f, beta = 0.f;  // HardSigmoid: alpha, beta; LeakyRelu: alpha; else unused
    static constexpr ActKind None = ActKind::None, Relu = ActKind::Relu, Relu6 = ActKind::Relu6,
                             HardSwish = ActKind::HardSwish, HardSigmoid = ActKind::HardSigmoid,
                             Sigmoid = ActKind::Sigmoid, Silu = ActKind::Silu, LeakyRelu = ActKind::LeakyRelu,
                             Gelu = ActKind::Gelu, GeluTanh = ActKind::GeluTanh;
    constexpr Act() = default;
    // The ONNX default parameters: HardSigmoid alpha 0.2, beta 0.5; LeakyRelu alpha 0.01.
    constexpr Act(ActKind k)  // NOLINT: implicit, so Act::Relu reads as an Act
        : kind(k), alpha(k == ActKind::HardSigmoid ? 0.2f : k == ActKind::LeakyRelu ? 0.01f : 0.f),
          beta(k == ActKind::HardSigmoid ? 0.5f : 0.f) {}
    constexpr Act(ActKind k, float a, float b) : kind(k), alpha(a), beta(b) {}
};
constexpr bool operator==(Act a, ActKind k) { return a.kind == k; }
constexpr bool operator!=(Act a, ActKind k) { return a.kind != k; }
enum class ConvMode { Auto, Sparse, Dense };

// Instruction set of the kernel variant the ops run: "avx512", "avx2", "sse2", "neon" or "scalar".
const char* isa();
// Vector width in floats of that variant (1 for the scalar kernels).
int simd_lanes();
// Kernel variant the conv ops run, picked at load from the CPU (CPUID on x86-64; HWCAP and the
// MIDR part number on AArch64) or named by $JCW_KERNELS: "avx512", "avx2", "sse2", "neon",
// "neon_a53", "native" (a JCW_NATIVE build) or "scalar" (under set_force_scalar).
std::string kernel_variant();
// The variants built into this library that this CPU runs, preferred first, "scalar" last.
std::vector<std::string> kernel_variants();
// Run `name` from now on (one of kernel_variants(); "scalar" = set_force_scalar(true));
// std::invalid_argument otherwise.  Process-wide, for tests and benchmarks.
void set_kernel_variant(const std::string& name);
// Per layer class (Conv2d::tune_class): run the named variant (not scalar) for convs of that class
// instead of the process-wide one (jcw.autotune applies its per-class winners so); std::invalid_argument
// for an unknown name.  set_kernel_variant clears them.
void set_class_variant(const std::string& cls, const std::string& name);
std::map<std::string, std::string> class_variants();
void clear_class_variants();
// Process-wide switch to the portable scalar kernels (for testing the SIMD path against them).
void set_force_scalar(bool on);
// Dense groups-1 convs run on the variant's dense register tile where it has one (on by
// default); off, they run on the 4x1 tile like sparse ones (benchmarks, tests).
void set_dense_tile(bool on);
bool dense_tile();
bool force_scalar();

// Activation names: "none", "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu",
// "leaky_relu", "gelu", "gelu_tanh" (act_name is the inverse); act_from_name gives the ONNX default
// parameters, the second form the given ones (used by hardsigmoid and leaky_relu only).
// Modes: "auto" | "sparse" | "dense".  std::invalid_argument on any other name.
Act act_from_name(const std::string& name);
Act act_from_name(const std::string& name, float alpha, float beta);
const char* act_name(Act act);
ConvMode mode_from_name(const std::string& name);

// Measured single-thread FMA throughput of this core with the SIMD kernels' vector type, GFLOP/s
// (2 flops per lane per FMA), timed over about `seconds`.
double measure_fma_peak_gflops(double seconds = 0.2);

struct KernelSet;  // one compiled kernel variant (kernels/src/kernel_set.h)

// Persistent worker pool.  parallel_for(n, fn) calls fn(i) for every i in [0, n) across the
// pool's threads (the caller is one of them) and returns when all calls are done.
class ThreadPool {
 public:
    explicit ThreadPool(int threads = 1);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;
    int size() const;
    void parallel_for(int n, const std::function<void(int)>& fn);
    // fn(t) once on every thread t in [0, size()), thread 0 being the caller: work split this way
    // lands on the same thread in consecutive calls, so data one call writes is read by the same
    // core in the next (no dynamic balancing: a descheduled thread delays the call).
    void for_each_thread(const std::function<void(int)>& fn);

 private:
    void run(int n, const std::function<void(int)>& fn, bool pinned);
    struct State;
    std::unique_ptr<State> state_;
};

class Conv2d {
 public:
    // weight: out_ch x (in_ch / groups) x kh x kw (OIHW), bias: out_ch floats or null.
    // Throws std::invalid_argument on inconsistent shapes.
    Conv2d(const float* weight, const float* bias, int out_ch, int in_ch, int kh, int kw, int stride,
           int pad, int groups, Act act, ConvMode mode = ConvMode::Auto);
    int out_size(int in) const;  // output height for input height `in` (square kernels/padding)
    int out_h(int in_h) const;
    int out_w(int in_w) const;
    size_t scratch_floats(int in_h, int in_w, int threads = 1) const;
    // The kernel variant and microkernel run() uses for this input size and thread count,
    // e.g. "avx512 tile_rows<16,4>" or "neon depthwise3x3_direct<4>".
    std::string kernel_name(int in_h, int in_w, int threads = 1) const;
    // The autotune class of this layer on an in_h x in_w input (jcw/autotune.py CLASSES): "dw3x3@56" /
    // "dw3x3s2@56" (depthwise 3x3 stride 1 / 2), "1x1@56" / "1x1@7" (groups-1 1x1 with at least / fewer
    // than 14 x 14 output pixels), "3x3@28" (any other non-depthwise conv), "" (other depthwise).
    std::string tune_class(int in_h, int in_w) const;
    void run(const float* in, int in_h, int in_w, float* out, const float* residual, float* scratch,
             ThreadPool& pool) const;
    bool sparse() const;       // true when the packed weights skip zero blocks
    bool depthwise() const;    // true when the depthwise kernel runs this layer
    double density() const;    // kept 4x1 blocks / all blocks (1.0 in dense mode)
    int out_ch() const { return out_ch_; }
    int in_ch() const { return in_ch_; }

 private:
    int row_split(int i, int n) const;
    bool depthwise_direct() const;  // 3x3 stride 1/2 pad 1 depthwise: reads the input in place
    bool depthwise_flat(int in_h, int in_w, int lanes) const;  // ... stride 1 on rows narrower than a vector
    // Dense 1x1 stride-1 layers on small images run vectorised over output channels.
    bool channel_vectorised(int in_h, int in_w, int lanes, int dense_pixels) const;
    // Tile width (positions) the planes of a groups-1 / depthwise conv are laid out for, and padded
    // to, on a variant: its dense tile's (dense_path), else its 4x1 tile's, or 3 vectors where the
    // image is 3 vectors + 0-2 positions (the rest riding along, micro/tile_4x1.h).
    int layout_tile(int ho, int wo, const KernelSet& ks, bool dense_path) const;
    // Pre-scaled input offsets (floats) of every packed block for one plane layout.
    std::shared_ptr<const std::vector<int32_t>> make_offsets(int in_h, int in_w, int tile, int bands,
                                                             bool every_position = false) const;
    // Everything run() decides for one (input size, threads, kernel variant): path, microkernel,
    // lanes, plane layout, loop order, thread split, block offsets, re-packed weights.  Built on
    // the first run with them and cached inside the op (thread-safe, shared by copies).
    struct ConvPlan;
    struct PlanCache;
    std::shared_ptr<const ConvPlan> plan(int in_h, int in_w, int threads) const;
    std::shared_ptr<PlanCache> plan_cache_;

    int out_ch_, in_ch_, kh_, kw_, stride_, pad_, groups_;
    Act act_;
    bool sparse_ = false, depthwise_ = false;
    double density_ = 1.0;
    int rows_ = 0;                  // block rows = ceil(out_ch / 4)
    std::vector<float> packed_;     // per row: bias[4], then 4 floats per block
    std::vector<int32_t> row_start_;  // rows_ + 1 block indices into codes_ (prefix sums of counts)
    std::vector<int32_t> codes_;    // per block: in_ch * kh * kw + ky * kw + kx
    std::vector<float> dw_;         // depthwise: per channel kh * kw weights
    std::vector<float> bias_;       // out_ch floats (zeros when no bias)
};

// Fully connected: out = act(W in + b), W is out_f x in_f row-major; 4x1 blocks along out_f.
class Linear {
 public:
    Linear(const float* weight, const float* bias, int out_f, int in_f, Act act = Act::None,
           ConvMode mode = ConvMode::Auto);
    void run(const float* in, float* out, ThreadPool& pool) const;
    bool sparse() const { return sparse_; }
    double density() const { return density_; }
    int out_features() const { return out_f_; }
    int in_features() const { return in_f_; }

 private:
    int out_f_, in_f_;
    Act act_;
    bool sparse_ = false;
    double density_ = 1.0;
    int rows_ = 0;
    std::vector<float> packed_;       // sparse: per row bias[4] + 4 floats per block; dense: W
    std::vector<int32_t> row_start_;
    std::vector<int32_t> cols_;
    std::vector<float> bias_;
};

// Max pooling with implicit -inf padding; out is c x oh x ow, oh = (h + 2 pad - k) / stride + 1.
void max_pool2d(const float* in, int c, int h, int w, int k, int stride, int pad, float* out, ThreadPool& pool);
// out[c] = mean of in[c][0..hw).
void global_avg_pool(const float* in, int c, int hw, float* out, ThreadPool& pool);
// out = act(a + b) elementwise; out may alias a or b.
void add_act(const float* a, const float* b, size_t n, Act act, float* out);
// out = act(in) elementwise; out may alias in.
void act_apply(const float* in, size_t n, Act act, float* out);
// out = a * b elementwise; out may alias a or b.
void mul(const float* a, const float* b, size_t n, float* out);
// out[ch][i] = in[ch][i] * s[ch] for ch < c, i < hw (the squeeze-excitation scale); out may alias in.
void scale_channels(const float* in, const float* s, int c, int hw, float* out, ThreadPool& pool);
// Average pooling of a c x h x w image: kh x kw windows, strides sh, sw, zero padding pt (top),
// pl (left), pb (bottom), pr (right), floor rounding (ceil_mode 0): oh = (h + pt + pb - kh) / sh + 1.
// The divisor is kh * kw with count_include_pad, else the number of input pixels in the window
// (an output whose window holds none is 0).
void avg_pool2d(const float* in, int c, int h, int w, int kh, int kw, int sh, int sw, int pt, int pl, int pb, int pr,
                bool count_include_pad, float* out, ThreadPool& pool);

}  // namespace jcw
