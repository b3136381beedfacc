// The only file with pybind11 types: numpy arrays in, numpy arrays out.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <string>

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

PYBIND11_MODULE(_kernels, m) {
    m.doc() = "jcw compiled kernels";
    m.def("conv2d_reference", &conv2d_reference, py::arg("input"), py::arg("weight"), py::arg("bias") = py::none(),
          py::arg("stride") = 1, py::arg("padding") = 0, py::arg("groups") = 1,
          "Reference direct convolution (NCHW, float32).");
}
