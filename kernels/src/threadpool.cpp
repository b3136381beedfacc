// Persistent worker pool and the build-time ISA report.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "ops.h"
#include "simd.h"

namespace jcw {

namespace {
std::atomic<bool> g_force_scalar{false};
thread_local bool t_in_pool_task = false;
}  // namespace

const char* isa() { return JCW_ISA; }
int simd_lanes() { return JCW_LANES; }
void set_force_scalar(bool on) { g_force_scalar.store(on); }
bool force_scalar() { return g_force_scalar.load(std::memory_order_relaxed); }

struct ThreadPool::State {
    int threads = 1;
    std::vector<std::thread> workers;
    std::mutex m;
    std::condition_variable wake, done;
    std::mutex call;  // one parallel_for at a time
    uint64_t generation = 0;
    bool stop = false;
    const std::function<void(int)>* fn = nullptr;
    int n = 0;
    std::atomic<int> next{0};
    int busy = 0;

    void drain(const std::function<void(int)>& f, int count) {
        t_in_pool_task = true;
        for (int i = next.fetch_add(1); i < count; i = next.fetch_add(1)) f(i);
        t_in_pool_task = false;
    }

    void worker() {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lk(m);
        for (;;) {
            wake.wait(lk, [&] { return stop || generation != seen; });
            if (stop) return;
            seen = generation;
            const auto* f = fn;
            const int count = n;
            lk.unlock();
            drain(*f, count);
            lk.lock();
            if (--busy == 0) done.notify_one();
        }
    }
};

ThreadPool::ThreadPool(int threads) : state_(new State) {
    if (threads < 1) throw std::invalid_argument("threads must be >= 1, got " + std::to_string(threads));
    state_->threads = threads;
    for (int i = 1; i < threads; ++i) state_->workers.emplace_back([s = state_.get()] { s->worker(); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lk(state_->m);
        state_->stop = true;
    }
    state_->wake.notify_all();
    for (auto& t : state_->workers) t.join();
}

int ThreadPool::size() const { return state_->threads; }

void ThreadPool::parallel_for(int n, const std::function<void(int)>& fn) {
    State& s = *state_;
    if (n <= 0) return;
    if (s.workers.empty() || n == 1 || t_in_pool_task) {
        for (int i = 0; i < n; ++i) fn(i);
        return;
    }
    std::lock_guard<std::mutex> call(s.call);
    {
        std::lock_guard<std::mutex> lk(s.m);
        s.fn = &fn;
        s.n = n;
        s.next.store(0);
        s.busy = static_cast<int>(s.workers.size());
        ++s.generation;
    }
    s.wake.notify_all();
    s.drain(fn, n);
    std::unique_lock<std::mutex> lk(s.m);
    s.done.wait(lk, [&] { return s.busy == 0; });
}

}  // namespace jcw
