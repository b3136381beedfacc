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

enum class Kind { Conv, Linear, MaxPool, AvgPool, Add, Act, Reshape, Const, AvgPool2d, Mul, Scale, Concat };

constexpr size_t kAlign = 16;  // floats: buffers start on 64-byte boundaries
constexpr size_t kExternal = std::numeric_limits<size_t>::max();

size_t round_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

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
        // AvgPool2d: kernel x kernel_w window, strides stride x stride_w, pads (pad = top, left, bottom, right)
        int kernel_w = 0, stride_w = 1, pad_l = 0, pad_b = 0, pad_r = 0;
        bool count_include_pad = true;
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

    // The plan: per value, the value whose storage holds it (store_root: itself, the input of a
    // reshape, or the concat it is a channel slice of) and its float offset there (store_off); arena
    // offset per storage root (kExternal for the input and constants).
    std::vector<int> store_root;
    std::vector<size_t> store_off;
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

    // Concat inputs that only the concat reads and that a step of the network writes (not a view,
    // not the input, not a constant) become channel slices of the concat's output: their
    // producers write there.  Nested concats chain (a slice of a slice).
    std::vector<int> readers(nv, 0), produced_by(nv, -1), parent(nv, -1);
    std::vector<size_t> parent_off(nv, 0);
    for (int s = 0; s < ns; ++s) {
        for (int v : steps[s].in) ++readers[v];
        if (steps[s].residual >= 0) ++readers[steps[s].residual];
        produced_by[steps[s].out] = s;
    }
    for (const Step& st : steps) {
        if (st.kind != Kind::Concat) continue;
        size_t off = 0;
        for (int v : st.in) {
            const int p = produced_by[v];
            if (p >= 0 && steps[p].kind != Kind::Reshape && values[v].root == v && readers[v] == 1 && v != output &&
                parent[v] < 0) {
                parent[v] = st.out;
                parent_off[v] = off;
            }
            off += values[v].shape.size();
        }
    }
    store_root.assign(nv, 0);
    store_off.assign(nv, 0);
    for (int v = 0; v < nv; ++v) {
        int r = values[v].root;
        size_t o = 0;
        while (parent[r] >= 0) {
            o += parent_off[r];
            r = values[parent[r]].root;
        }
        store_root[v] = r;
        store_off[v] = o;
    }
    const std::vector<int>& root = store_root;

    std::vector<int> last_use(nv, -1);
    for (int s = 0; s < ns; ++s) {
        for (int v : steps[s].in) last_use[root[v]] = s;
        if (steps[s].residual >= 0) last_use[root[steps[s].residual]] = s;
    }
    last_use[root[output]] = ns;

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
        // A concat slice goes into its concat's buffer, taken when the first of its slices is written.
        const int out_root = root[st.out];
        const size_t need = values[out_root].shape.size();
        std::vector<int> reads = st.in;
        if (st.residual >= 0) reads.push_back(st.residual);
        auto release_reads = [&](int kept) {
            for (int v : reads) {
                const int r = root[v];
                if (!external(r) && last_use[r] == s && buffer_of[r] != kept) buffers[buffer_of[r]].free = true;
            }
        };
        if (buffer_of[out_root] >= 0) {
            release_reads(buffer_of[out_root]);
            continue;
        }
        // Elementwise epilogues may write over an input that dies here; a conv's output never
        // over its own input (Conv2d::run's contract: threads convolving row bands still read
        // the input's halo rows, a 1x1 conv reads every channel of a pixel after storing some),
        // so not over a residual that is also the conv's input (y = conv(x) + x).
        std::vector<int> inplace;
        if (st.kind == Kind::Conv && st.residual >= 0 && root[st.residual] != root[st.in[0]])
            inplace.push_back(st.residual);
        if (st.kind == Kind::Add || st.kind == Kind::Act || st.kind == Kind::Mul) inplace = st.in;
        if (st.kind == Kind::Scale) inplace.push_back(st.in[0]);
        if (out_root != st.out) inplace.clear();  // a slice's place is fixed
        int chosen = -1;
        for (int v : inplace) {
            const int r = root[v];
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
        buffer_of[out_root] = chosen;
        release_reads(chosen);
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
        const int r = store_root[v];
        if (r == 0)
            ptr[v] = const_cast<float*>(in);
        else if (!const_data[r].empty())
            ptr[v] = const_data[r].data();
        else
            ptr[v] = arena + offset[r] + store_off[v];
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
            jcw::act_apply(ptr[st.in[0]], x.size(), st.act, out);
            break;
        case Kind::AvgPool2d:
            jcw::avg_pool2d(ptr[st.in[0]], x.c, x.h, x.w, st.kernel, st.kernel_w, st.stride, st.stride_w, st.pad,
                            st.pad_l, st.pad_b, st.pad_r, st.count_include_pad, out, pool);
            break;
        case Kind::Mul:
            jcw::mul(ptr[st.in[0]], ptr[st.in[1]], x.size(), out);
            break;
        case Kind::Scale:
            jcw::scale_channels(ptr[st.in[0]], ptr[st.in[1]], x.c, x.h * x.w, out, pool);
            break;
        case Kind::Concat: {
            float* dst = out;
            for (int v : st.in) {  // slices are already in place
                const size_t n = values[v].shape.size();
                if (ptr[v] != dst) std::memcpy(dst, ptr[v], n * sizeof(float));
                dst += n;
            }
            break;
        }
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

int Network::avg_pool(const std::string& name, int x, int kh, int kw, int sh, int sw, int pt, int pl, int pb, int pr,
                      bool count_include_pad) {
    Impl& m = *impl_;
    m.check_open();
    const ValueShape in = m.value(x, name.c_str()).shape;
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || pt < 0 || pl < 0 || pb < 0 || pr < 0 || pt >= kh || pb >= kh ||
        pl >= kw || pr >= kw)
        throw std::invalid_argument(name + ": need kernel >= 1, stride >= 1 and 0 <= pad < kernel");
    const ValueShape out{in.c, (in.h + pt + pb - kh) / sh + 1, (in.w + pl + pr - kw) / sw + 1};
    if (in.h + pt + pb < kh || in.w + pl + pr < kw)
        throw std::invalid_argument(name + ": kernel larger than the padded " + std::to_string(in.h) + "x" +
                                    std::to_string(in.w) + " input");
    Impl::Step st{Kind::AvgPool2d, name, {x}};
    st.kernel = kh, st.kernel_w = kw, st.stride = sh, st.stride_w = sw;
    st.pad = pt, st.pad_l = pl, st.pad_b = pb, st.pad_r = pr;
    st.count_include_pad = count_include_pad;
    return m.push_step(std::move(st), out);
}

int Network::mul(const std::string& name, int a, int b) {
    Impl& m = *impl_;
    m.check_open();
    ValueShape sa = m.value(a, name.c_str()).shape, sb = m.value(b, name.c_str()).shape;
    if (sa.c == sb.c && sa.h == sb.h && sa.w == sb.w) return m.push_step(Impl::Step{Kind::Mul, name, {a, b}}, sa);
    if (sa.h == 1 && sa.w == 1) {
        std::swap(a, b);
        std::swap(sa, sb);
    }
    if (sa.c != sb.c || sb.h != 1 || sb.w != 1)
        throw std::invalid_argument(name + ": mul needs equal shapes or a (C, 1, 1) factor of a (C, H, W) value, got (" +
                                    std::to_string(sa.c) + ", " + std::to_string(sa.h) + ", " + std::to_string(sa.w) +
                                    ") and (" + std::to_string(sb.c) + ", " + std::to_string(sb.h) + ", " +
                                    std::to_string(sb.w) + ")");
    return m.push_step(Impl::Step{Kind::Scale, name, {a, b}}, sa);
}

int Network::concat(const std::string& name, const std::vector<int>& xs) {
    Impl& m = *impl_;
    m.check_open();
    if (xs.empty()) throw std::invalid_argument(name + ": concat of no values");
    ValueShape out = m.value(xs[0], name.c_str()).shape;
    out.c = 0;
    for (int v : xs) {
        const ValueShape s = m.value(v, name.c_str()).shape;
        if (s.h != out.h || s.w != out.w)
            throw std::invalid_argument(name + ": concat of values with different H x W");
        out.c += s.c;
    }
    return m.push_step(Impl::Step{Kind::Concat, name, xs}, out);
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
    static const char* names[] = {"conv",   "linear",    "maxpool", "avgpool", "add",   "act",
                                  "reshape", "const", "avgpool2d", "mul",     "scale", "concat"};
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
        } else if (st.kind == Kind::Concat) {
            for (int v : st.in)
                i.copied += impl_->store_root.empty() || impl_->store_root[v] != impl_->store_root[st.out];
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
