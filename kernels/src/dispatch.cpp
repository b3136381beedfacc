// Runtime dispatch: which kernel variant (kernel_set.h) the ops run, picked once at load from the
// CPU.  x86-64: AVX-512 (F, DQ, BW, VL) > AVX2 + FMA > SSE2 by CPUID (__builtin_cpu_supports,
// which also checks that the OS saves the wide registers).  AArch64: NEON always; the in-order
// tuning (neon_a53) where every core the kernel reports is in-order (MIDR part 0xd03 Cortex-A53
// or 0xd05 Cortex-A55), else the out-of-order tuning (neon: Cortex-A72 and later).  $JCW_KERNELS
// names a variant to use instead (tests, benchmarks); set_kernel_variant() does the same in-process.
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernel_set.h"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

#ifndef JCW_VARIANT_LIST  // a build without the per-variant objects: the one variant "native"
#define JCW_VARIANT_LIST JCW_V(native)
#endif

namespace jcw {

namespace variants {
#define JCW_V(name) const KernelSet& name();
JCW_VARIANT_LIST
#undef JCW_V
}  // namespace variants

namespace {

// Cortex part numbers of the cores the kernel lists in /proc/cpuinfo ("CPU part : 0xd03").
std::vector<int> arm_parts() {
    std::vector<int> parts;
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("CPU part", 0) == 0) {
            const auto colon = line.find(':');
            if (colon != std::string::npos) parts.push_back(static_cast<int>(std::strtol(line.c_str() + colon + 1, nullptr, 0)));
        }
#if defined(__aarch64__) && defined(__linux__) && defined(HWCAP_CPUID)
    if (parts.empty() && (getauxval(AT_HWCAP) & HWCAP_CPUID)) {  // MIDR_EL1, emulated by the kernel
        uint64_t midr = 0;
        asm volatile("mrs %0, MIDR_EL1" : "=r"(midr));
        parts.push_back(static_cast<int>((midr >> 4) & 0xfff));
    }
#endif
    return parts;
}

bool in_order_arm() {
    const std::vector<int> parts = arm_parts();
    if (parts.empty()) return false;
    for (int p : parts)
        if (p != 0xd03 && p != 0xd05) return false;
    return true;
}

// Whether this CPU runs `name`, and whether it is the variant to prefer on it.
bool runs(const std::string& name) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (name == "avx512")
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    (void)name;
#endif
    return true;  // sse2 (x86-64 baseline), neon (AArch64 baseline), neon_a53, native
}

bool preferred(const std::string& name) {
    if (name == "neon_a53") return in_order_arm();
    if (name == "neon") return !in_order_arm();
    return true;
}

struct Registry {
    std::vector<const KernelSet*> sets;  // runnable, best first, then scalar
    KernelSet scalar;
    std::atomic<const KernelSet*> selected{nullptr};

    Registry() {
        const KernelSet* all[] = {
#define JCW_V(name) &variants::name(),
            JCW_VARIANT_LIST
#undef JCW_V
        };
        std::vector<const KernelSet*> pref, rest;
        for (const KernelSet* s : all)
            if (runs(s->name)) (preferred(s->name) ? pref : rest).push_back(s);
        sets = pref;
        sets.insert(sets.end(), rest.begin(), rest.end());
        // Scalar: the last (most basic) variant's kernels at one lane.
        scalar = *all[sizeof(all) / sizeof(all[0]) - 1];
        scalar.name = "scalar", scalar.isa = "scalar", scalar.lanes = 1;
        scalar.dense_rows = scalar.dense_vecs = 0, scalar.dense = nullptr;  // the dense tile runs at full width only
        sets.push_back(&scalar);
        const KernelSet* pick = sets.front();
        if (const char* env = std::getenv("JCW_KERNELS"); env && *env) {
            const KernelSet* s = find(env);
            if (!s) throw std::runtime_error(std::string("JCW_KERNELS=") + env + ": not a kernel variant this CPU runs (" + names() + ")");
            pick = s;
        }
        selected.store(pick);
    }
    const KernelSet* find(const std::string& name) const {
        for (const KernelSet* s : sets)
            if (name == s->name) return s;
        return nullptr;
    }
    std::string names() const {
        std::string out;
        for (const KernelSet* s : sets) out += (out.empty() ? "" : ", ") + std::string(s->name);
        return out;
    }
};

Registry& registry() {
    static Registry r;
    return r;
}

std::atomic<bool> g_force_scalar{false};

}  // namespace

const KernelSet& active_kernels() {
    Registry& r = registry();
    return g_force_scalar.load(std::memory_order_relaxed) ? r.scalar : *r.selected.load(std::memory_order_relaxed);
}

namespace {
// Per layer class (Conv2d::tune_class), the variant a measured autotune picked where it differs
// from the process-wide one; set_kernel_variant() clears it (an explicit choice wins).
// g_class_set: whether g_class has an entry, so that a conv's plan look-up (every call) takes no
// lock when none is set (the default).
std::mutex g_class_m;
std::map<std::string, const KernelSet*> g_class;
std::atomic<bool> g_class_set{false};
}  // namespace

const KernelSet& kernels_for_class(const std::string& cls) {
    if (g_class_set.load(std::memory_order_acquire) && !g_force_scalar.load(std::memory_order_relaxed)) {
        std::lock_guard<std::mutex> lk(g_class_m);
        const auto it = g_class.find(cls);
        if (it != g_class.end()) return *it->second;
    }
    return active_kernels();
}

void set_class_variant(const std::string& cls, const std::string& name) {
    Registry& r = registry();
    const KernelSet* s = r.find(name);
    if (!s || s == &r.scalar)
        throw std::invalid_argument("class variant must be one of " + r.names() + " but scalar, got '" + name + "'");
    std::lock_guard<std::mutex> lk(g_class_m);
    g_class[cls] = s;
    g_class_set.store(true, std::memory_order_release);
}

std::map<std::string, std::string> class_variants() {
    std::lock_guard<std::mutex> lk(g_class_m);
    std::map<std::string, std::string> out;
    for (const auto& [cls, s] : g_class) out[cls] = s->name;
    return out;
}

void clear_class_variants() {
    std::lock_guard<std::mutex> lk(g_class_m);
    g_class.clear();
    g_class_set.store(false, std::memory_order_release);
}

const KernelSet* const* runnable_kernel_sets(int* n) {
    Registry& r = registry();
    *n = static_cast<int>(r.sets.size());
    return r.sets.data();
}

const char* isa() { return active_kernels().isa; }
int simd_lanes() { return active_kernels().lanes; }
void set_force_scalar(bool on) { g_force_scalar.store(on); }

std::atomic<bool> g_dense_tile{true};
void set_dense_tile(bool on) { g_dense_tile.store(on); }
bool dense_tile() { return g_dense_tile.load(std::memory_order_relaxed); }
bool force_scalar() { return g_force_scalar.load(std::memory_order_relaxed); }

std::string kernel_variant() { return active_kernels().name; }

std::vector<std::string> kernel_variants() {
    std::vector<std::string> out;
    for (const KernelSet* s : registry().sets) out.push_back(s->name);
    return out;
}

void set_kernel_variant(const std::string& name) {
    Registry& r = registry();
    const KernelSet* s = r.find(name);
    if (!s) throw std::invalid_argument("kernel variant must be one of " + r.names() + ", got '" + name + "'");
    clear_class_variants();
    if (s == &r.scalar) {
        set_force_scalar(true);
        return;
    }
    set_force_scalar(false);
    r.selected.store(s);
}

double measure_fma_peak_gflops(double seconds) { return active_kernels().fma_peak(seconds); }

}  // namespace jcw
