// Whole-network executor: a list of ops over numbered per-image activation values, planned once
// (buffer reuse by liveness, in-place residual epilogues, one scratch buffer sized for the largest
// layer) and run entirely in C++, one image of the batch after the other.
//
// Values are per-image tensors (C, H, W); a flat vector of F features is (F, 1, 1).  Value 0 is
// the network input.  Every add_* call appends one step, returns the id of the value it produces
// and throws std::invalid_argument on inconsistent shapes; steps run in the order they were added.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "ops.h"

namespace jcw {

struct ValueShape {
    int c = 0, h = 1, w = 1;
    size_t size() const { return static_cast<size_t>(c) * h * w; }
};

// What one step does, for printing the plan.
struct StepInfo {
    std::string name;
    std::string op;        // "conv", "depthwise", "linear", "maxpool", "avgpool", "avgpool2d", "add", "mul",
                           // "scale", "concat", "act", "reshape"
    bool sparse = false;   // conv / linear: packed weights skip zero blocks
    double density = 1.0;  // conv / linear: kept 4x1 blocks / all blocks
    ValueShape out;
    bool residual = false; // conv: a residual add is fused into the epilogue
    std::string act;       // act_name(): "none", "relu", "relu6", "hardswish", ...
    std::string microkernel;  // conv: kernel variant and microkernel run (Conv2d::kernel_name), else ""
    int copied = 0;        // concat: inputs copied (not written in place by their producers)
};

class Network {
 public:
    // The network input is one image of c x h x w floats.
    Network(int c, int h, int w, int threads = 1);
    ~Network();
    Network(const Network&) = delete;
    Network& operator=(const Network&) = delete;

    int conv(const std::string& name, int x, const float* weight, const float* bias, int out_ch, int kh, int kw,
             int stride, int pad, int groups, Act act, ConvMode mode, int residual = -1);
    int linear(const std::string& name, int x, const float* weight, const float* bias, int out_f, Act act,
               ConvMode mode);
    int max_pool(const std::string& name, int x, int kernel, int stride, int pad);
    int global_avg_pool(const std::string& name, int x);
    // Average pooling (ops.h avg_pool2d): kernel kh x kw, strides sh, sw, pads top, left, bottom, right.
    int avg_pool(const std::string& name, int x, int kh, int kw, int sh, int sw, int pt, int pl, int pb, int pr,
                 bool count_include_pad);
    int add(const std::string& name, int a, int b, Act act);
    // a * b: elementwise when the shapes are equal ("mul"), else one of them (C, 1, 1) and the other
    // (C, H, W): every channel of the big one times its value ("scale", the squeeze-excitation gate).
    int mul(const std::string& name, int a, int b);
    // Values of equal H and W stacked along channels.  Inputs that only the concat reads, produced by
    // a step of this network, are planned as channel slices of the output: their producers write
    // straight into it and the concat copies nothing for them (StepInfo::copied counts the others).
    int concat(const std::string& name, const std::vector<int>& xs);
    int act(const std::string& name, int x, Act act);
    // Same memory viewed with another shape of equal size (Flatten / Reshape): no copy.
    int reshape(const std::string& name, int x, int c, int h, int w);
    // A value owned by the network, filled from `data` (used to time a conv with a residual input).
    int constant(const float* data, int c, int h, int w);

    // Marks the network output and plans buffers; further add_* calls are rejected.
    void set_output(int x);

    ValueShape input_shape() const;
    ValueShape shape(int value) const;
    ValueShape output_shape() const;
    int threads() const;
    size_t arena_floats() const;   // activation + scratch floats allocated by the plan
    std::vector<StepInfo> steps() const;

    // in: n images of input_shape(); out: n images of output_shape().
    void run(const float* in, int n, float* out);
    // Milliseconds per run(in, n, out) over `repeats` timed runs after `warmup` untimed ones.
    std::vector<double> benchmark(const float* in, int n, int repeats, int warmup);
    // Mean milliseconds per step over `repeats` single-image runs after `warmup` untimed ones.
    std::vector<double> profile(const float* in, int repeats, int warmup);
    // Milliseconds of step `index` alone (on its planned buffers, after one full run on `in`).
    std::vector<double> time_step(int index, const float* in, int repeats, int warmup);

 private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace jcw
