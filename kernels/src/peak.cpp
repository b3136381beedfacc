// Name parsing for the op enums (the FMA peak probe is per kernel variant: micro/variant.cpp).
#include <stdexcept>

#include "ops.h"

namespace jcw {

namespace {

struct ActEntry {
    const char* name;
    ActKind kind;
};
constexpr ActEntry kActs[] = {
    {"none", ActKind::None},           {"relu", ActKind::Relu},         {"relu6", ActKind::Relu6},
    {"hardswish", ActKind::HardSwish}, {"hardsigmoid", ActKind::HardSigmoid}, {"sigmoid", ActKind::Sigmoid},
    {"silu", ActKind::Silu},           {"leaky_relu", ActKind::LeakyRelu}, {"gelu", ActKind::Gelu},
    {"gelu_tanh", ActKind::GeluTanh},
};

}  // namespace

Act act_from_name(const std::string& name) {
    for (const ActEntry& e : kActs)
        if (name == e.name) return Act(e.kind);
    std::string names;
    for (const ActEntry& e : kActs) names += (names.empty() ? "'" : ", '") + std::string(e.name) + "'";
    throw std::invalid_argument("act must be one of " + names + ", got '" + name + "'");
}

Act act_from_name(const std::string& name, float alpha, float beta) {
    Act a = act_from_name(name);
    if (a == ActKind::HardSigmoid || a == ActKind::LeakyRelu) a.alpha = alpha;
    if (a == ActKind::HardSigmoid) a.beta = beta;
    return a;
}

const char* act_name(Act act) {
    for (const ActEntry& e : kActs)
        if (act == e.kind) return e.name;
    return "none";
}

ConvMode mode_from_name(const std::string& name) {
    if (name == "auto") return ConvMode::Auto;
    if (name == "sparse") return ConvMode::Sparse;
    if (name == "dense") return ConvMode::Dense;
    throw std::invalid_argument("mode must be 'auto', 'sparse' or 'dense', got '" + name + "'");
}

}  // namespace jcw
