// Whole-network executor: step list, liveness-based buffer plan, per-image run loop, timing.
#include "executor.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>

namespace jcw {

namespace {

enum class Kind { Conv, Linear, MaxPool, AvgPool, Add, Act, Reshape, Const };

const char* act_name(Act a) { return a == Act::Relu ? "relu" : a == Act::Relu6 ? "relu6" : "none"; }

constexpr size_t kAlign = 16;  // floats: buffers start on 64-byte boundaries
constexpr size_t kExternal = std::numeric_limits<size_t>::max();

size_t round_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

void apply_act(const float* in, size_t n, Act act, float* out) {
    const float hi = act == Act::Relu6 ? 6.f : std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < n; ++i) out[i] = std::min(std::max(in[i], 0.f), hi);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

struct Network::Impl {
    struct Value {
        ValueShape shape;
        int root;  // value owning the storage (differs from the id for reshapes)
    };
    struct Step {
        Step(Kind k, std::string n, std::vector<int> i) : kind(k), name(std::move(n)), in(std::move(i)) {}
        Kind kind;
        std::string name;
        std::vector<int> in;
        int residual = -1;
        int out = -1;
        Act act = Act::None;
        int kernel = 0, stride = 1, pad = 0;
        std::unique_ptr<Conv2d> conv;
        std::unique_ptr<Linear> linear;
    };

    explicit Impl(int threads) : pool(threads) {}

    ThreadPool pool;
    std::mutex running;  // one forward pass at a time: the arena is shared
    std::vector<Value> values;
    std::vector<Step> steps;
    std::vector<std::vector<float>> const_data;  // per value id; empty unless Kind::Const
    int output = -1;

    // The plan: arena offset per storage root (kExternal for the input and constants).
    std::vector<size_t> offset;
    std::vector<float> arena_storage;
    float* arena = nullptr;
    size_t arena_floats = 0, scratch_offset = 0;
    std::vector<float*> ptr;  // per value, valid during a run

    void check_open() const {
        if (output >= 0) throw std::invalid_argument("network is already planned (set_output was called)");
    }
    const Value& value(int id, const char* what) const {
        if (id < 0 || id >= static_cast<int>(values.size()))
            throw std::invalid_argument(std::string(what) + ": no value with id " + std::to_string(id));
        return values[id];
    }
    int push_value(ValueShape s, int root = -1) {
        if (s.c < 1 || s.h < 1 || s.w < 1) throw std::invalid_argument("value shape must be positive");
        const int id = static_cast<int>(values.size());
        values.push_back({s, root < 0 ? id : root});
        const_data.emplace_back();
        return id;
    }
    int push_step(Step st, ValueShape out_shape, int root = -1) {
        st.out = push_value(out_shape, root);
        steps.push_back(std::move(st));
        return steps.back().out;
    }

    void plan();
    void resolve(const float* in);
    void exec(const Step& st);
    void run_image(const float* in, float* out, double* step_ms);
};

void Network::Impl::plan() {
    const int nv = static_cast<int>(values.size());
    const int ns = static_cast<int>(steps.size());
    std::vector<int> last_use(nv, -1);
    for (int s = 0; s < ns; ++s) {
        for (int v : steps[s].in) last_use[values[v].root] = s;
        if (steps[s].residual >= 0) last_use[values[steps[s].residual].root] = s;
    }
    last_use[values[output].root] = ns;

    auto external = [&](int root) { return root == 0 || !const_data[root].empty(); };
    struct Buffer {
        size_t cap;
        bool free;
    };
    std::vector<Buffer> buffers;
    std::vector<int> buffer_of(nv, -1);
    for (int s = 0; s < ns; ++s) {
        const Step& st = steps[s];
        if (st.kind == Kind::Reshape || st.kind == Kind::Const) continue;
        const size_t need = values[st.out].shape.size();
        // Elementwise epilogues may write over an input that dies here; a conv's output never
        // over its own input (Conv2d::run's contract: threads convolving row bands still read
        // the input's halo rows, a 1x1 conv reads every channel of a pixel after storing some),
        // so not over a residual that is also the conv's input (y = conv(x) + x).
        std::vector<int> inplace;
        if (st.kind == Kind::Conv && st.residual >= 0 && values[st.residual].root != values[st.in[0]].root)
            inplace.push_back(st.residual);
        if (st.kind == Kind::Add || st.kind == Kind::Act) inplace = st.in;
        int chosen = -1;
        for (int v : inplace) {
            const int r = values[v].root;
            if (!external(r) && last_use[r] == s && values[r].shape.size() == need) {
                chosen = buffer_of[r];
                break;
            }
        }
        if (chosen < 0) {
            for (int b = 0; b < static_cast<int>(buffers.size()); ++b) {
                if (!buffers[b].free) continue;
                const bool fits = buffers[b].cap >= need;
                if (chosen < 0) { chosen = b; continue; }
                const bool chosen_fits = buffers[chosen].cap >= need;
                if (fits && (!chosen_fits || buffers[b].cap < buffers[chosen].cap)) chosen = b;
                if (!fits && !chosen_fits && buffers[b].cap > buffers[chosen].cap) chosen = b;
            }
            if (chosen < 0) {
                chosen = static_cast<int>(buffers.size());
                buffers.push_back({0, true});
            }
            buffers[chosen].cap = std::max(buffers[chosen].cap, need);
        }
        buffers[chosen].free = false;
        buffer_of[st.out] = chosen;
        std::vector<int> reads = st.in;
        if (st.residual >= 0) reads.push_back(st.residual);
        for (int v : reads) {
            const int r = values[v].root;
            if (!external(r) && last_use[r] == s && buffer_of[r] != chosen) buffers[buffer_of[r]].free = true;
        }
    }

    std::vector<size_t> buffer_offset(buffers.size());
    size_t total = 0;
    for (size_t b = 0; b < buffers.size(); ++b) {
        buffer_offset[b] = total;
        total += round_up(buffers[b].cap);
    }
    size_t scratch = 0;
    for (const Step& st : steps) {
        if (st.kind != Kind::Conv) continue;
        const ValueShape& x = values[st.in[0]].shape;
        scratch = std::max(scratch, st.conv->scratch_floats(x.h, x.w, pool.size()));
    }
    scratch_offset = total;
    arena_floats = total + round_up(scratch);
    arena_storage.assign(arena_floats + kAlign, 0.f);
    const auto addr = reinterpret_cast<uintptr_t>(arena_storage.data());
    const uintptr_t bytes = kAlign * sizeof(float);
    arena = arena_storage.data() + ((bytes - addr % bytes) % bytes) / sizeof(float);

    offset.assign(nv, kExternal);
    for (int v = 0; v < nv; ++v)
        if (buffer_of[v] >= 0) offset[v] = buffer_offset[buffer_of[v]];
    ptr.assign(nv, nullptr);
}

void Network::Impl::resolve(const float* in) {
    for (size_t v = 0; v < values.size(); ++v) {
        const int r = values[v].root;
        if (r == 0)
            ptr[v] = const_cast<float*>(in);
        else if (!const_data[r].empty())
            ptr[v] = const_data[r].data();
        else
            ptr[v] = arena + offset[r];
    }
}

void Network::Impl::exec(const Step& st) {
    float* out = ptr[st.out];
    const ValueShape& x = values[st.in.empty() ? st.out : st.in[0]].shape;
    switch (st.kind) {
        case Kind::Conv:
            st.conv->run(ptr[st.in[0]], x.h, x.w, out, st.residual >= 0 ? ptr[st.residual] : nullptr,
                         arena + scratch_offset, pool);
            break;
        case Kind::Linear:
            st.linear->run(ptr[st.in[0]], out, pool);
            break;
        case Kind::MaxPool:
            jcw::max_pool2d(ptr[st.in[0]], x.c, x.h, x.w, st.kernel, st.stride, st.pad, out, pool);
            break;
        case Kind::AvgPool:
            jcw::global_avg_pool(ptr[st.in[0]], x.c, x.h * x.w, out, pool);
            break;
        case Kind::Add:
            jcw::add_act(ptr[st.in[0]], ptr[st.in[1]], x.size(), st.act, out);
            break;
        case Kind::Act:
            apply_act(ptr[st.in[0]], x.size(), st.act, out);
            break;
        case Kind::Reshape:
        case Kind::Const:
            break;
    }
}

void Network::Impl::run_image(const float* in, float* out, double* step_ms) {
    resolve(in);
    for (size_t s = 0; s < steps.size(); ++s) {
        if (!step_ms) {
            exec(steps[s]);
            continue;
        }
        const auto t0 = std::chrono::steady_clock::now();
        exec(steps[s]);
        step_ms[s] += ms_since(t0);
    }
    std::memcpy(out, ptr[output], values[output].shape.size() * sizeof(float));
}

Network::Network(int c, int h, int w, int threads) {
    if (threads < 1) throw std::invalid_argument("threads must be >= 1, got " + std::to_string(threads));
    impl_ = std::make_unique<Impl>(threads);
    impl_->push_value({c, h, w});
}

Network::~Network() = default;

int Network::conv(const std::string& name, int x, const float* weight, const float* bias, int out_ch, int kh,
                  int kw, int stride, int pad, int groups, Act act, ConvMode mode, int residual) {
    Impl& m = *impl_;
    m.check_open();
    const ValueShape in = m.value(x, name.c_str()).shape;
    Impl::Step st{Kind::Conv, name, {x}};
    st.conv = std::make_unique<Conv2d>(weight, bias, out_ch, in.c, kh, kw, stride, pad, groups, act, mode);
    const ValueShape out{out_ch, st.conv->out_h(in.h), st.conv->out_w(in.w)};
    if (out.h < 1 || out.w < 1)
        throw std::invalid_argument(name + ": kernel larger than the padded " + std::to_string(in.h) + "x" +
                                    std::to_string(in.w) + " input");
    if (residual >= 0) {
        const ValueShape r = m.value(residual, name.c_str()).shape;
        if (r.c != out.c || r.h != out.h || r.w != out.w)
            throw std::invalid_argument(name + ": residual shape does not match the conv output");
    }
    st.residual = residual;
    st.act = act;
    return m.push_step(std::move(st), out);
}

int Network::linear(const std::string& name, int x, const float* weight, const float* bias, int out_f, Act act,
                    ConvMode mode) {
    Impl& m = *impl_;
    m.check_open();
    const ValueShape in = m.value(x, name.c_str()).shape;
    Impl::Step st{Kind::Linear, name, {x}};
    st.linear = std::make_unique<Linear>(weight, bias, out_f, static_cast<int>(in.size()), act, mode);
    st.act = act;
    return m.push_step(std::move(st), {out_f, 1, 1});
}

int Network::max_pool(const std::string& name, int x, int kernel, int stride, int pad) {
    Impl& m = *impl_;
    m.check_open();
    const ValueShape in = m.value(x, name.c_str()).shape;
    if (kernel < 1 || stride < 1 || pad < 0 || 2 * pad > kernel)
        throw std::invalid_argument(name + ": need kernel >= 1, stride >= 1, 0 <= pad <= kernel / 2");
    const ValueShape out{in.c, (in.h + 2 * pad - kernel) / stride + 1, (in.w + 2 * pad - kernel) / stride + 1};
    Impl::Step st{Kind::MaxPool, name, {x}};
    st.kernel = kernel;
    st.stride = stride;
    st.pad = pad;
    return m.push_step(std::move(st), out);
}

int Network::global_avg_pool(const std::string& name, int x) {
    Impl& m = *impl_;
    m.check_open();
    const ValueShape in = m.value(x, name.c_str()).shape;
    return m.push_step(Impl::Step{Kind::AvgPool, name, {x}}, {in.c, 1, 1});
}

int Network::add(const std::string& name, int a, int b, Act act) {
    Impl& m = *impl_;
    m.check_open();
    const ValueShape sa = m.value(a, name.c_str()).shape, sb = m.value(b, name.c_str()).shape;
    if (sa.c != sb.c || sa.h != sb.h || sa.w != sb.w) throw std::invalid_argument(name + ": add of different shapes");
    Impl::Step st{Kind::Add, name, {a, b}};
    st.act = act;
    return m.push_step(std::move(st), sa);
}

int Network::act(const std::string& name, int x, Act act) {
    Impl& m = *impl_;
    m.check_open();
    Impl::Step st{Kind::Act, name, {x}};
    st.act = act;
    return m.push_step(std::move(st), m.value(x, name.c_str()).shape);
}

int Network::reshape(const std::string& name, int x, int c, int h, int w) {
    Impl& m = *impl_;
    m.check_open();
    const Impl::Value in = m.value(x, name.c_str());
    const ValueShape out{c, h, w};
    if (out.size() != in.shape.size())
        throw std::invalid_argument(name + ": reshape to " + std::to_string(out.size()) + " values from " +
                                    std::to_string(in.shape.size()));
    return m.push_step(Impl::Step{Kind::Reshape, name, {x}}, out, in.root);
}

int Network::constant(const float* data, int c, int h, int w) {
    Impl& m = *impl_;
    m.check_open();
    const int id = m.push_value({c, h, w});
    m.const_data[id].assign(data, data + m.values[id].shape.size());
    return id;
}

void Network::set_output(int x) {
    Impl& m = *impl_;
    m.check_open();
    m.value(x, "output");
    m.output = x;
    m.plan();
}

ValueShape Network::input_shape() const { return impl_->values[0].shape; }
ValueShape Network::shape(int value) const { return impl_->value(value, "shape").shape; }
ValueShape Network::output_shape() const {
    if (impl_->output < 0) throw std::invalid_argument("network has no output yet (call set_output)");
    return impl_->values[impl_->output].shape;
}
int Network::threads() const { return impl_->pool.size(); }
size_t Network::arena_floats() const { return impl_->arena_floats; }

std::vector<StepInfo> Network::steps() const {
    static const char* names[] = {"conv", "linear", "maxpool", "avgpool", "add", "act", "reshape", "const"};
    std::vector<StepInfo> info;
    for (const auto& st : impl_->steps) {
        StepInfo i;
        i.name = st.name;
        i.op = names[static_cast<int>(st.kind)];
        i.out = impl_->values[st.out].shape;
        i.act = act_name(st.act);
        i.residual = st.residual >= 0;
        if (st.conv) {
            if (st.conv->depthwise()) i.op = "depthwise";
            i.sparse = st.conv->sparse();
            i.density = st.conv->density();
            const ValueShape& x = impl_->values[st.in[0]].shape;
            i.microkernel = st.conv->kernel_name(x.h, x.w, impl_->pool.size());
        } else if (st.linear) {
            i.sparse = st.linear->sparse();
            i.density = st.linear->density();
        }
        info.push_back(i);
    }
    return info;
}

void Network::run(const float* in, int n, float* out) {
    Impl& m = *impl_;
    if (m.output < 0) throw std::invalid_argument("network has no output yet (call set_output)");
    std::lock_guard<std::mutex> lock(m.running);
    const size_t in_size = m.values[0].shape.size(), out_size = m.values[m.output].shape.size();
    for (int i = 0; i < n; ++i) m.run_image(in + i * in_size, out + i * out_size, nullptr);
}

std::vector<double> Network::benchmark(const float* in, int n, int repeats, int warmup) {
    if (repeats < 1 || warmup < 0) throw std::invalid_argument("need repeats >= 1 and warmup >= 0");
    std::vector<float> out(static_cast<size_t>(n) * output_shape().size());
    for (int i = 0; i < warmup; ++i) run(in, n, out.data());
    std::vector<double> ms(repeats);
    for (int i = 0; i < repeats; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        run(in, n, out.data());
        ms[i] = ms_since(t0);
    }
    return ms;
}

std::vector<double> Network::profile(const float* in, int repeats, int warmup) {
    Impl& m = *impl_;
    if (repeats < 1 || warmup < 0) throw std::invalid_argument("need repeats >= 1 and warmup >= 0");
    std::vector<float> out(output_shape().size());
    std::lock_guard<std::mutex> lock(m.running);
    for (int i = 0; i < warmup; ++i) m.run_image(in, out.data(), nullptr);
    std::vector<double> ms(m.steps.size(), 0.0);
    for (int i = 0; i < repeats; ++i) m.run_image(in, out.data(), ms.data());
    for (double& t : ms) t /= repeats;
    return ms;
}

std::vector<double> Network::time_step(int index, const float* in, int repeats, int warmup) {
    Impl& m = *impl_;
    if (index < 0 || index >= static_cast<int>(m.steps.size()))
        throw std::invalid_argument("no step " + std::to_string(index));
    if (repeats < 1 || warmup < 0) throw std::invalid_argument("need repeats >= 1 and warmup >= 0");
    std::vector<float> out(output_shape().size());
    std::lock_guard<std::mutex> lock(m.running);
    m.run_image(in, out.data(), nullptr);
    m.resolve(in);
    const Impl::Step& st = m.steps[index];
    for (int i = 0; i < warmup; ++i) m.exec(st);
    std::vector<double> ms(repeats);
    for (int i = 0; i < repeats; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        m.exec(st);
        ms[i] = ms_since(t0);
    }
    return ms;
}

}  // namespace jcw
