// Persistent worker pool.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "ops.h"
#include "simd.h"

namespace jcw {

namespace {
thread_local bool t_in_pool_task = false;
}  // namespace


// Workers and the caller spin briefly before sleeping (as OpenMP runtimes and pthreadpool do):
// a network's layers follow each other within microseconds, so a worker woken through the
// condition variable for every layer would pay the wake-up latency (tens of microseconds) on
// each, which is the whole run time of a small layer.  After kSpin of idle spinning a worker
// sleeps, so an idle engine costs no CPU.
namespace {
constexpr auto kSpin = std::chrono::microseconds(200);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

template <class Pred>
bool spin_until(Pred ready) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0;; ++i) {
        if (ready()) return true;
        cpu_relax();
        if ((i & 63) == 63 && std::chrono::steady_clock::now() - t0 > kSpin) return ready();
    }
}
}  // namespace

struct ThreadPool::State {
    int threads = 1;
    std::vector<std::thread> workers;
    std::mutex m;
    std::condition_variable wake, done;
    std::mutex call;  // one parallel_for at a time
    std::atomic<uint64_t> generation{0};
    std::atomic<bool> stop{false};
    const std::function<void(int)>* fn = nullptr;  // published before generation is bumped
    int n = 0;
    bool pinned = false;  // fn(worker index) once instead of draining parts
    std::atomic<int> next{0};
    std::atomic<int> busy{0};

    // Thread `index`'s share of the current call: fn(index) when pinned, else parts taken from `next`.
    void share(int index) {
        t_in_pool_task = true;
        if (pinned)
            (*fn)(index);
        else
            for (int i = next.fetch_add(1); i < n; i = next.fetch_add(1)) (*fn)(i);
        t_in_pool_task = false;
    }

    void worker(int index) {
        uint64_t seen = 0;
        for (;;) {
            auto fresh = [&] { return stop.load(std::memory_order_acquire) ||
                                      generation.load(std::memory_order_acquire) != seen; };
            if (!spin_until(fresh)) {
                std::unique_lock<std::mutex> lk(m);
                wake.wait(lk, fresh);
            }
            if (stop.load(std::memory_order_acquire)) return;
            seen = generation.load(std::memory_order_acquire);
            share(index);
            if (busy.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard<std::mutex> lk(m);
                done.notify_one();
            }
        }
    }
};

ThreadPool::ThreadPool(int threads) : state_(new State) {
    if (threads < 1) throw std::invalid_argument("threads must be >= 1, got " + std::to_string(threads));
    state_->threads = threads;
    for (int i = 1; i < threads; ++i) state_->workers.emplace_back([s = state_.get(), i] { s->worker(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lk(state_->m);
        state_->stop.store(true, std::memory_order_release);
    }
    state_->wake.notify_all();
    for (auto& t : state_->workers) t.join();
}

int ThreadPool::size() const { return state_->threads; }

void ThreadPool::parallel_for(int n, const std::function<void(int)>& fn) {
    if (n <= 0) return;
    if (state_->workers.empty() || n == 1 || t_in_pool_task) {
        for (int i = 0; i < n; ++i) fn(i);
        return;
    }
    run(n, fn, false);
}

void ThreadPool::for_each_thread(const std::function<void(int)>& fn) {
    if (state_->workers.empty() || t_in_pool_task) {
        for (int t = 0; t < state_->threads; ++t) fn(t);
        return;
    }
    run(state_->threads, fn, true);
}

void ThreadPool::run(int n, const std::function<void(int)>& fn, bool pinned) {
    State& s = *state_;
    std::lock_guard<std::mutex> call(s.call);
    {
        std::lock_guard<std::mutex> lk(s.m);  // a worker about to sleep sees the new generation
        s.fn = &fn;
        s.n = n;
        s.pinned = pinned;
        s.next.store(0, std::memory_order_relaxed);
        s.busy.store(static_cast<int>(s.workers.size()), std::memory_order_relaxed);
        s.generation.fetch_add(1, std::memory_order_release);
    }
    s.wake.notify_all();
    s.share(0);
    auto finished = [&] { return s.busy.load(std::memory_order_acquire) == 0; };
    if (!spin_until(finished)) {
        std::unique_lock<std::mutex> lk(s.m);
        s.done.wait(lk, finished);
    }
}

}  // namespace jcw
