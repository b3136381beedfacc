// Name parsing for the op enums (the FMA peak probe is per kernel variant: micro/variant.cpp).
#include <stdexcept>

#include "ops.h"

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

}  // namespace jcw
