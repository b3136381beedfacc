// The only file with pybind11 types: numpy arrays in, numpy arrays out.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "executor.h"
#include "ops.h"
#include "reference.h"

namespace py = pybind11;
using FArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

namespace {

FArray conv2d_reference(FArray input, FArray weight, std::optional<FArray> bias, int stride, int padding,
                        int groups) {
    if (input.ndim() != 4) throw std::invalid_argument("input must be 4-D NCHW, got " + std::to_string(input.ndim()) + "-D");
    if (weight.ndim() != 4) throw std::invalid_argument("weight must be 4-D OIHW, got " + std::to_string(weight.ndim()) + "-D");
    if (stride < 1 || padding < 0 || groups < 1) throw std::invalid_argument("need stride >= 1, padding >= 0, groups >= 1");
    jcw::ConvShape s{input.shape(0), input.shape(1), input.shape(2), input.shape(3),
                     weight.shape(0), weight.shape(2), weight.shape(3),
                     stride, stride, padding, padding, groups};
    if (s.in_ch % groups || s.out_ch % groups || weight.shape(1) != s.in_ch / groups)
        throw std::invalid_argument("channel counts do not match groups: input " + std::to_string(s.in_ch) +
                                    ", weight " + std::to_string(s.out_ch) + "x" + std::to_string(weight.shape(1)) +
                                    ", groups " + std::to_string(groups));
    if (bias && (bias->ndim() != 1 || bias->shape(0) != s.out_ch))
        throw std::invalid_argument("bias must have shape (" + std::to_string(s.out_ch) + ",)");
    if (s.out_h() < 1 || s.out_w() < 1) throw std::invalid_argument("kernel larger than padded input");
    FArray out({s.n, s.out_ch, s.out_h(), s.out_w()});
    const float* b = bias ? bias->data() : nullptr;
    {
        py::gil_scoped_release release;
        jcw::conv2d_reference(s, input.data(), weight.data(), b, out.mutable_data());
    }
    return out;
}

}  // namespace

// ===== Whole-network executor (engine section: jcw.engine builds a Network and runs it) =====
namespace {

// An activation by name; alpha / beta (hardsigmoid, leaky_relu) default to the ONNX defaults.
jcw::Act parse_act(const std::string& s, std::optional<float> alpha = std::nullopt,
                   std::optional<float> beta = std::nullopt) {
    const jcw::Act a = jcw::act_from_name(s);
    return jcw::act_from_name(s, alpha.value_or(a.alpha), beta.value_or(a.beta));
}

jcw::ConvMode parse_mode(const std::string& s) {
    if (s == "auto") return jcw::ConvMode::Auto;
    if (s == "sparse") return jcw::ConvMode::Sparse;
    if (s == "dense") return jcw::ConvMode::Dense;
    throw std::invalid_argument("mode must be 'auto', 'sparse' or 'dense', got '" + s + "'");
}

// Checks that `x` holds whole images of the network input and returns how many.
int image_count(const jcw::Network& net, const FArray& x) {
    const jcw::ValueShape s = net.input_shape();
    if (x.ndim() != 4 || x.shape(1) != s.c || x.shape(2) != s.h || x.shape(3) != s.w || x.shape(0) < 1)
        throw std::invalid_argument("input must be (N, " + std::to_string(s.c) + ", " + std::to_string(s.h) + ", " +
                                    std::to_string(s.w) + ") with N >= 1");
    return static_cast<int>(x.shape(0));
}

py::array_t<double> to_numpy(const std::vector<double>& v) {
    return py::array_t<double>(static_cast<py::ssize_t>(v.size()), v.data());
}

void bind_executor(py::module_& m) {
    using jcw::Network;
    py::class_<Network>(m, "Network", "A planned network of ops run in C++ one image at a time (executor.h).")
        .def(py::init<int, int, int, int>(), py::arg("c"), py::arg("h"), py::arg("w"), py::arg("threads") = 1)
        .def("conv",
             [](Network& n, const std::string& name, int x, FArray weight, std::optional<FArray> bias, int stride,
                int pad, int groups, const std::string& act, const std::string& mode, int residual,
                std::optional<float> alpha, std::optional<float> beta) {
                 if (weight.ndim() != 4) throw std::invalid_argument(name + ": weight must be 4-D OIHW");
                 if (groups < 1 || weight.shape(1) * groups != n.shape(x).c)
                     throw std::invalid_argument(name + ": weight " + std::to_string(weight.shape(1)) + " in-channels x " +
                                                 std::to_string(groups) + " groups != " + std::to_string(n.shape(x).c) +
                                                 " input channels");
                 if (bias && (bias->ndim() != 1 || bias->shape(0) != weight.shape(0)))
                     throw std::invalid_argument(name + ": bias must have one value per output channel");
                 return n.conv(name, x, weight.data(), bias ? bias->data() : nullptr, static_cast<int>(weight.shape(0)),
                               static_cast<int>(weight.shape(2)), static_cast<int>(weight.shape(3)), stride, pad,
                               groups, parse_act(act, alpha, beta), parse_mode(mode), residual);
             },
             py::arg("name"), py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"), py::arg("pad"),
             py::arg("groups"), py::arg("act") = "none", py::arg("mode") = "auto", py::arg("residual") = -1,
             py::arg("alpha") = py::none(), py::arg("beta") = py::none())
        .def("linear",
             [](Network& n, const std::string& name, int x, FArray weight, std::optional<FArray> bias,
                const std::string& act, const std::string& mode, std::optional<float> alpha, std::optional<float> beta) {
                 if (weight.ndim() != 2 || static_cast<size_t>(weight.shape(1)) != n.shape(x).size())
                     throw std::invalid_argument(name + ": weight must be (out, " + std::to_string(n.shape(x).size()) + ")");
                 if (bias && (bias->ndim() != 1 || bias->shape(0) != weight.shape(0)))
                     throw std::invalid_argument(name + ": bias must have one value per output feature");
                 return n.linear(name, x, weight.data(), bias ? bias->data() : nullptr,
                                 static_cast<int>(weight.shape(0)), parse_act(act, alpha, beta), parse_mode(mode));
             },
             py::arg("name"), py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("act") = "none",
             py::arg("mode") = "auto", py::arg("alpha") = py::none(), py::arg("beta") = py::none())
        .def("max_pool", &Network::max_pool, py::arg("name"), py::arg("x"), py::arg("kernel"), py::arg("stride"),
             py::arg("pad"))
        .def("global_avg_pool", &Network::global_avg_pool, py::arg("name"), py::arg("x"))
        .def("avg_pool", &Network::avg_pool, py::arg("name"), py::arg("x"), py::arg("kh"), py::arg("kw"), py::arg("sh"),
             py::arg("sw"), py::arg("pad_top"), py::arg("pad_left"), py::arg("pad_bottom"), py::arg("pad_right"),
             py::arg("count_include_pad"))
        .def("add", [](Network& n, const std::string& name, int a, int b, const std::string& act,
                       std::optional<float> alpha, std::optional<float> beta) {
                 return n.add(name, a, b, parse_act(act, alpha, beta));
             }, py::arg("name"), py::arg("a"), py::arg("b"), py::arg("act") = "none", py::arg("alpha") = py::none(),
             py::arg("beta") = py::none())
        .def("mul", &Network::mul, py::arg("name"), py::arg("a"), py::arg("b"))
        .def("concat", &Network::concat, py::arg("name"), py::arg("xs"))
        .def("act", [](Network& n, const std::string& name, int x, const std::string& act, std::optional<float> alpha,
                       std::optional<float> beta) {
                 return n.act(name, x, parse_act(act, alpha, beta));
             }, py::arg("name"), py::arg("x"), py::arg("act"), py::arg("alpha") = py::none(), py::arg("beta") = py::none())
        .def("reshape", &Network::reshape, py::arg("name"), py::arg("x"), py::arg("c"), py::arg("h"), py::arg("w"))
        .def("constant", [](Network& n, FArray data) {
                 if (data.ndim() != 3) throw std::invalid_argument("constant must be 3-D (C, H, W)");
                 return n.constant(data.data(), static_cast<int>(data.shape(0)), static_cast<int>(data.shape(1)),
                                   static_cast<int>(data.shape(2)));
             }, py::arg("data"))
        .def("set_output", &Network::set_output, py::arg("x"))
        .def("shape", [](const Network& n, int v) { auto s = n.shape(v); return py::make_tuple(s.c, s.h, s.w); })
        .def_property_readonly("threads", &Network::threads)
        .def_property_readonly("arena_floats", &Network::arena_floats)
        .def("steps", [](const Network& n) {
            py::list out;
            for (const auto& s : n.steps())
                out.append(py::dict(py::arg("name") = s.name, py::arg("op") = s.op, py::arg("sparse") = s.sparse,
                                    py::arg("density") = s.density, py::arg("act") = s.act,
                                    py::arg("residual") = s.residual, py::arg("microkernel") = s.microkernel,
                                    py::arg("copied") = s.copied,
                                    py::arg("shape") = py::make_tuple(s.out.c, s.out.h, s.out.w)));
            return out;
        })
        .def("run", [](Network& n, FArray x) {
                 const int count = image_count(n, x);
                 const jcw::ValueShape o = n.output_shape();
                 FArray out({static_cast<py::ssize_t>(count), static_cast<py::ssize_t>(o.c),
                             static_cast<py::ssize_t>(o.h), static_cast<py::ssize_t>(o.w)});
                 float* dst = out.mutable_data();
                 py::gil_scoped_release release;
                 n.run(x.data(), count, dst);
                 return out;
             }, py::arg("x"), "Forward pass over the batch (GIL released); returns (N, C, H, W).")
        .def("benchmark", [](Network& n, FArray x, int repeats, int warmup) {
                 const int count = image_count(n, x);
                 std::vector<double> ms;
                 {
                     py::gil_scoped_release release;
                     ms = n.benchmark(x.data(), count, repeats, warmup);
                 }
                 return to_numpy(ms);
             }, py::arg("x"), py::arg("repeats"), py::arg("warmup"), "Milliseconds per forward pass.")
        .def("profile", [](Network& n, FArray x, int repeats, int warmup) {
                 if (image_count(n, x) != 1) throw std::invalid_argument("profile takes one image (N = 1)");
                 std::vector<double> ms;
                 {
                     py::gil_scoped_release release;
                     ms = n.profile(x.data(), repeats, warmup);
                 }
                 return to_numpy(ms);
             }, py::arg("x"), py::arg("repeats"), py::arg("warmup"), "Mean milliseconds per step.")
        .def("time_step", [](Network& n, int index, FArray x, int repeats, int warmup) {
                 if (image_count(n, x) != 1) throw std::invalid_argument("time_step takes one image (N = 1)");
                 std::vector<double> ms;
                 {
                     py::gil_scoped_release release;
                     ms = n.time_step(index, x.data(), repeats, warmup);
                 }
                 return to_numpy(ms);
             }, py::arg("index"), py::arg("x"), py::arg("repeats"), py::arg("warmup"),
             "Milliseconds of one step alone, on its planned buffers.");
}

}  // namespace
// ===== end of the executor section =====

// ===== Op kernels (kernels section: jcw.kernels facade over ops.h) =====
namespace {

struct PyConv2d {
    jcw::Conv2d conv;
    std::shared_ptr<jcw::ThreadPool> pool;
};

struct PyLinear {
    jcw::Linear fc;
    std::shared_ptr<jcw::ThreadPool> pool;
};

// (C, H, W) or (N, C, H, W) -> N; checks the channel count.
int64_t images_of(const FArray& x, int channels, const char* what) {
    if ((x.ndim() != 3 && x.ndim() != 4) || x.shape(x.ndim() - 3) != channels)
        throw std::invalid_argument(std::string(what) + " must be (C, H, W) or (N, C, H, W) with C = " +
                                    std::to_string(channels));
    return x.ndim() == 4 ? x.shape(0) : 1;
}

PyConv2d make_conv(FArray weight, std::optional<FArray> bias, int stride, int padding, int groups,
                   const std::string& act, const std::string& mode, int threads) {
    if (weight.ndim() != 4) throw std::invalid_argument("weight must be 4-D OIHW, got " + std::to_string(weight.ndim()) + "-D");
    const int out_ch = static_cast<int>(weight.shape(0));
    if (bias && (bias->ndim() != 1 || bias->shape(0) != out_ch))
        throw std::invalid_argument("bias must have shape (" + std::to_string(out_ch) + ",)");
    if (groups < 1) throw std::invalid_argument("groups must be >= 1, got " + std::to_string(groups));
    return PyConv2d{jcw::Conv2d(weight.data(), bias ? bias->data() : nullptr, out_ch,
                                static_cast<int>(weight.shape(1)) * groups, static_cast<int>(weight.shape(2)),
                                static_cast<int>(weight.shape(3)), stride, padding, groups, jcw::act_from_name(act),
                                jcw::mode_from_name(mode)),
                    std::make_shared<jcw::ThreadPool>(threads)};
}

FArray conv_run(const PyConv2d& c, FArray x, std::optional<FArray> residual) {
    const int64_t n = images_of(x, c.conv.in_ch(), "input");
    const int h = static_cast<int>(x.shape(x.ndim() - 2)), w = static_cast<int>(x.shape(x.ndim() - 1));
    const int ho = c.conv.out_h(h), wo = c.conv.out_w(w);
    if (ho < 1 || wo < 1) throw std::invalid_argument("input " + std::to_string(h) + "x" + std::to_string(w) + " is smaller than the kernel");
    std::vector<py::ssize_t> shape{c.conv.out_ch(), ho, wo};
    if (x.ndim() == 4) shape.insert(shape.begin(), n);
    const size_t per_out = static_cast<size_t>(c.conv.out_ch()) * ho * wo, per_in = static_cast<size_t>(c.conv.in_ch()) * h * w;
    if (residual && static_cast<size_t>(residual->size()) != per_out * n)
        throw std::invalid_argument("residual must have the output's shape");
    FArray out(shape);
    float* dst = out.mutable_data();
    const float* res = residual ? residual->data() : nullptr;
    py::gil_scoped_release release;
    std::vector<float> scratch(c.conv.scratch_floats(h, w, c.pool->size()));
    for (int64_t i = 0; i < n; ++i)
        c.conv.run(x.data() + i * per_in, h, w, dst + i * per_out, res ? res + i * per_out : nullptr, scratch.data(), *c.pool);
    return out;
}

// Milliseconds per call of run() on one image, timed in C++ (after `warmup` untimed calls).
py::array_t<double> conv_benchmark(const PyConv2d& c, FArray x, int repeats, int warmup) {
    if (images_of(x, c.conv.in_ch(), "input") != 1 || x.ndim() != 3) throw std::invalid_argument("benchmark takes one (C, H, W) image");
    if (repeats < 1 || warmup < 0) throw std::invalid_argument("need repeats >= 1 and warmup >= 0");
    const int h = static_cast<int>(x.shape(1)), w = static_cast<int>(x.shape(2));
    std::vector<float> out(static_cast<size_t>(c.conv.out_ch()) * c.conv.out_h(h) * c.conv.out_w(w));
    std::vector<double> ms(repeats);
    {
        py::gil_scoped_release release;
        std::vector<float> scratch(c.conv.scratch_floats(h, w, c.pool->size()));
        for (int i = 0; i < warmup + repeats; ++i) {
            const auto t0 = std::chrono::steady_clock::now();
            c.conv.run(x.data(), h, w, out.data(), nullptr, scratch.data(), *c.pool);
            const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            if (i >= warmup) ms[i - warmup] = dt;
        }
    }
    return py::array_t<double>(static_cast<py::ssize_t>(ms.size()), ms.data());
}

FArray linear_run(const PyLinear& l, FArray x) {
    if ((x.ndim() != 1 && x.ndim() != 2) || x.shape(x.ndim() - 1) != l.fc.in_features())
        throw std::invalid_argument("input must be (in,) or (N, in) with in = " + std::to_string(l.fc.in_features()));
    const int64_t n = x.ndim() == 2 ? x.shape(0) : 1;
    FArray out(x.ndim() == 2 ? std::vector<py::ssize_t>{n, l.fc.out_features()} : std::vector<py::ssize_t>{l.fc.out_features()});
    float* dst = out.mutable_data();
    py::gil_scoped_release release;
    for (int64_t i = 0; i < n; ++i) l.fc.run(x.data() + i * l.fc.in_features(), dst + i * l.fc.out_features(), *l.pool);
    return out;
}

void bind_ops(py::module_& m) {
    m.def("isa", [] { return std::string(jcw::isa()); }, "Instruction set the SIMD kernels were built for.");
    m.def("simd_lanes", &jcw::simd_lanes, "Floats per SIMD vector (1 = scalar build).");
    m.def("set_force_scalar", &jcw::set_force_scalar, py::arg("on"), "Route every op through the portable scalar kernels.");
    m.def("force_scalar", &jcw::force_scalar);
    m.def("set_dense_tile", &jcw::set_dense_tile, py::arg("on"),
          "Run dense groups-1 convs on the variant's dense register tile (default on), else on the 4x1 tile.");
    m.def("dense_tile", &jcw::dense_tile);
    m.def("kernel_variant", &jcw::kernel_variant,
          "Kernel variant the conv ops run (picked at load from the CPU, or $JCW_KERNELS).");
    m.def("kernel_variants", &jcw::kernel_variants,
          "Kernel variants built in that this CPU runs, preferred first, 'scalar' last.");
    m.def("set_kernel_variant", &jcw::set_kernel_variant, py::arg("name"),
          "Run the named variant from now on (process-wide; for tests and benchmarks).");
    m.def("set_class_variant", &jcw::set_class_variant, py::arg("cls"), py::arg("name"),
          "Run the named variant for convs of autotune class `cls` (Conv2d.tune_class) instead of the "
          "process-wide one; set_kernel_variant clears these.");
    m.def("class_variants", &jcw::class_variants, "The per-class variants set (class -> variant).");
    m.def("clear_class_variants", &jcw::clear_class_variants);
    m.def("fma_peak_gflops", [](double seconds) { py::gil_scoped_release r; return jcw::measure_fma_peak_gflops(seconds); },
          py::arg("seconds") = 0.2, "Measured single-thread FMA peak, GFLOP/s.");
    py::class_<PyConv2d>(m, "Conv2d", "Packed convolution (ops.h); run on (C,H,W) or (N,C,H,W) float32.")
        .def(py::init(&make_conv), py::arg("weight"), py::arg("bias") = py::none(), py::arg("stride") = 1,
             py::arg("padding") = 0, py::arg("groups") = 1, py::arg("act") = "none", py::arg("mode") = "auto",
             py::arg("threads") = 1)
        .def("run", &conv_run, py::arg("x"), py::arg("residual") = py::none())
        .def("benchmark", &conv_benchmark, py::arg("x"), py::arg("repeats") = 20, py::arg("warmup") = 3)
        .def_property_readonly("sparse", [](const PyConv2d& c) { return c.conv.sparse(); })
        .def_property_readonly("depthwise", [](const PyConv2d& c) { return c.conv.depthwise(); })
        .def_property_readonly("density", [](const PyConv2d& c) { return c.conv.density(); })
        .def("kernel_name", [](const PyConv2d& c, int h, int w) { return c.conv.kernel_name(h, w, c.pool->size()); },
             py::arg("h"), py::arg("w"), "Kernel variant and microkernel run for an h x w input.")
        .def("tune_class", [](const PyConv2d& c, int h, int w) { return c.conv.tune_class(h, w); }, py::arg("h"),
             py::arg("w"), "Autotune class of this layer on an h x w input ('' for none).")
        .def_property_readonly("threads", [](const PyConv2d& c) { return c.pool->size(); });
    py::class_<PyLinear>(m, "Linear", "Packed fully connected layer (ops.h).")
        .def(py::init([](FArray weight, std::optional<FArray> bias, const std::string& act, const std::string& mode, int threads) {
                 if (weight.ndim() != 2) throw std::invalid_argument("weight must be 2-D (out, in)");
                 if (bias && (bias->ndim() != 1 || bias->shape(0) != weight.shape(0)))
                     throw std::invalid_argument("bias must have shape (" + std::to_string(weight.shape(0)) + ",)");
                 return PyLinear{jcw::Linear(weight.data(), bias ? bias->data() : nullptr, static_cast<int>(weight.shape(0)),
                                             static_cast<int>(weight.shape(1)), jcw::act_from_name(act), jcw::mode_from_name(mode)),
                                 std::make_shared<jcw::ThreadPool>(threads)};
             }),
             py::arg("weight"), py::arg("bias") = py::none(), py::arg("act") = "none", py::arg("mode") = "auto",
             py::arg("threads") = 1)
        .def("run", &linear_run, py::arg("x"))
        .def_property_readonly("sparse", [](const PyLinear& l) { return l.fc.sparse(); })
        .def_property_readonly("density", [](const PyLinear& l) { return l.fc.density(); });
    m.def("max_pool2d", [](FArray x, int kernel, int stride, int padding, int threads) {
              if (x.ndim() != 3) throw std::invalid_argument("input must be (C, H, W)");
              if (kernel < 1 || stride < 1 || padding < 0 || 2 * padding >= kernel + 1)
                  throw std::invalid_argument("need kernel >= 1, stride >= 1, 0 <= padding <= kernel / 2");
              const int c = static_cast<int>(x.shape(0)), h = static_cast<int>(x.shape(1)), w = static_cast<int>(x.shape(2));
              const int oh = (h + 2 * padding - kernel) / stride + 1, ow = (w + 2 * padding - kernel) / stride + 1;
              if (oh < 1 || ow < 1) throw std::invalid_argument("kernel larger than the padded input");
              FArray out({c, oh, ow});
              float* dst = out.mutable_data();
              py::gil_scoped_release r;
              jcw::ThreadPool pool(threads);
              jcw::max_pool2d(x.data(), c, h, w, kernel, stride, padding, dst, pool);
              return out;
          }, py::arg("x"), py::arg("kernel"), py::arg("stride"), py::arg("padding") = 0, py::arg("threads") = 1);
    m.def("global_avg_pool", [](FArray x) {
              if (x.ndim() != 3) throw std::invalid_argument("input must be (C, H, W)");
              FArray out(std::vector<py::ssize_t>{x.shape(0)});
              float* dst = out.mutable_data();
              py::gil_scoped_release r;
              jcw::ThreadPool pool(1);
              jcw::global_avg_pool(x.data(), static_cast<int>(x.shape(0)), static_cast<int>(x.shape(1) * x.shape(2)), dst, pool);
              return out;
          }, py::arg("x"));
    m.def("activate", [](FArray x, const std::string& act, std::optional<float> alpha, std::optional<float> beta) {
              const jcw::Act f = parse_act(act, alpha, beta);
              FArray out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
              float* dst = out.mutable_data();
              py::gil_scoped_release r;
              jcw::act_apply(x.data(), static_cast<size_t>(x.size()), f, dst);
              return out;
          }, py::arg("x"), py::arg("act"), py::arg("alpha") = py::none(), py::arg("beta") = py::none(),
          "act(x) elementwise (the epilogue activations of ops.h).");
    m.def("add_act", [](FArray a, FArray b, const std::string& act) {
              if (a.size() != b.size()) throw std::invalid_argument("a and b must have the same number of elements");
              FArray out(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
              const jcw::Act f = jcw::act_from_name(act);
              float* dst = out.mutable_data();
              py::gil_scoped_release r;
              jcw::add_act(a.data(), b.data(), static_cast<size_t>(a.size()), f, dst);
              return out;
          }, py::arg("a"), py::arg("b"), py::arg("act") = "none");
}

}  // namespace
// ===== end of the kernels section =====

PYBIND11_MODULE(_kernels, m) {
    m.doc() = "jcw compiled kernels";
    m.def("conv2d_reference", &conv2d_reference, py::arg("input"), py::arg("weight"), py::arg("bias") = py::none(),
          py::arg("stride") = 1, py::arg("padding") = 0, py::arg("groups") = 1,
          "Reference direct convolution (NCHW, float32).");
    bind_executor(m);
    bind_ops(m);
}
