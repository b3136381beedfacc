// Conv2d: planning (which microkernel, lanes, plane layout, loop order and thread split for an
// input size, cached in a ConvPlan) and the run loop.  Packing: pack.cpp; plane re-layout:
// layout.cpp; microkernels: micro/*.h, compiled per kernel variant (kernel_set.h, dispatch.cpp).
#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

#include "block_gemv.h"
#include "conv_plan.h"
#include "ops.h"
#include "simd.h"

namespace jcw {

namespace {

// Dense 1x1 stride-1 layers on images of at most this many pixels run vectorised over output
// channels (cv_blocks); measured against the pixel-vectorised kernel in benchmarks/kernels.py.
constexpr int kChannelVectorisedPixels = 64;

// Rows of at most this many blocks prefetch the next tile's input when all rows run per tile
// (large inputs): with few FMAs per loaded vector the kernel waits on memory (stems, 1x1 layers
// on large images); longer rows are compute-bound and the extra load-port op per block costs
// more than it saves, and with rows outer the input is already in L2.
constexpr int kPrefetchInputBlocks = 160;

// Block-sparse groups-1 layers with at least this block density run on the variant's dense tile
// (zero blocks included) where it has one: the 4x1 tile's rate per kept block is 1.1-1.6x lower
// than the dense tile's (AVX-512, docs/kernels.md: 3x3 256->256 @14 dense 1.54 ms, density 0.9 /
// 0.8 / 0.7 / 0.6 on the 4x1 tile 1.96 / 1.79 / 1.66 / 1.45 ms).
constexpr double kDenseTileFromDensity = 0.85;

// Plans kept per op (input sizes x thread counts x variants seen).
constexpr size_t kPlansKept = 8;

// fn(i0, i1) over contiguous ranges of [0, n) run by the pool: one range on one thread, else
// 4 per thread (a thread that gets descheduled leaves its ranges to the others).
template <class F>
void parallel_ranges(ThreadPool& pool, int n, F&& fn) {
    const int parts = std::min(n, pool.size() == 1 ? 1 : pool.size() * 4);
    pool.parallel_for(parts, [&](int i) {
        fn(static_cast<int>(static_cast<int64_t>(n) * i / parts), static_cast<int>(static_cast<int64_t>(n) * (i + 1) / parts));
    });
}

// Widest vector (the variant's lanes, 8, 4 or 1) that fits an output row of `wo` pixels.
int row_lanes(int lanes, int wo) {
    for (int l : {lanes, 8, 4})
        if (l <= lanes && l <= wo) return l;
    return 1;
}

int pick_lanes(int lanes, int qend) {
    if (lanes == 1) return 1;
    if (qend >= lanes) return lanes;
    return qend >= 4 ? 4 : 1;
}

int tile_of(const KernelSet& ks) { return ks.lanes * ks.tile_vecs; }

std::string lanes_name(const char* kernel, int lanes, int extra = 0) {
    return std::string(kernel) + "<" + std::to_string(lanes) + (extra ? "," + std::to_string(extra) : "") + ">";
}

}  // namespace

// Only with 8 or more lanes: with 4 (NEON, SSE2) the pixel tile wastes few lanes on small images
// (49 pixels = 13 vectors), and on NEON it runs closer to the FMA peak (llvm-mca: tile_rows 97% /
// 60% of the peak on cortex-a72 / a53, cv_tile 87% / 21%; docs/kernels.md).  Where the variant has
// a dense register tile, only images smaller than its pixel tile (`dense_pixels`; 0: none): from
// 7x7 on it is faster (1x1 1024->1024 @7: 0.97 against 1.05 ms with cold weights, 0.90 against
// 0.93 hot), below it wastes lanes (@4x4: 0.97 against 0.50 ms).
bool Conv2d::channel_vectorised(int in_h, int in_w, int lanes, int dense_pixels) const {
    return lanes >= 8 && !sparse_ && !depthwise_ && kh_ == 1 && kw_ == 1 && stride_ == 1 && pad_ == 0 && groups_ == 1 &&
           in_h * in_w <= kChannelVectorisedPixels && (dense_pixels == 0 || in_h * in_w < dense_pixels);
}

std::shared_ptr<const std::vector<int32_t>> Conv2d::make_offsets(int in_h, int in_w, int tile, int bands,
                                                                 bool every_position) const {
    const PlaneLayout p = plane_layout(out_h(in_h), out_w(in_w), kh_, kw_, stride_, pad_, tile, bands);
    const int taps = kh_ * kw_;
    std::vector<int32_t> tap(taps);
    for (int t = 0; t < taps; ++t) tap[t] = p.direct ? 0 : tap_offset(p, stride_, 0, t / kw_, t % kw_);
    const int32_t channel = p.direct ? in_h * in_w : tap_offset(p, stride_, 1, 0, 0);
    // Two padding entries (offset 0): the in-order NEON row loop loads offsets up to two ahead.
    // every_position: one offset per input position in order (the dense tile over a sparse packing).
    const size_t n = every_position ? static_cast<size_t>(in_ch_) * taps : codes_.size();
    auto off = std::make_shared<std::vector<int32_t>>(n + 2, 0);
    for (size_t b = 0; b < n; ++b) {
        const int code = every_position ? static_cast<int>(b) : codes_[b];
        (*off)[b] = (code / taps) * channel + tap[code % taps];
    }
    return off;
}

std::string Conv2d::tune_class(int in_h, int in_w) const {
    if (depthwise_) return kh_ == 3 && kw_ == 3 ? (stride_ == 1 ? "dw3x3@56" : stride_ == 2 ? "dw3x3s2@56" : "") : "";
    if (kh_ == 1 && kw_ == 1) return out_h(in_h) * out_w(in_w) >= 14 * 14 ? "1x1@56" : "1x1@7";
    return "3x3@28";
}

std::shared_ptr<const Conv2d::ConvPlan> Conv2d::plan(int in_h, int in_w, int threads) const {
    const KernelSet& ks = kernels_for_class(tune_class(in_h, in_w));
    {
        std::lock_guard<std::mutex> lk(plan_cache_->m);
        for (const auto& p : plan_cache_->plans)
            if (p->in_h == in_h && p->in_w == in_w && p->threads == threads && p->ks == &ks &&
                p->dense_tile == dense_tile())
                return p;
    }
    auto pl = std::make_shared<ConvPlan>();
    ConvPlan& c = *pl;
    c.in_h = in_h, c.in_w = in_w, c.threads = threads, c.ks = &ks, c.dense_tile = dense_tile();
    const std::string v = std::string(ks.name) + " ";
    const int ho = out_h(in_h), wo = out_w(in_w);
    const bool one_pixel = !depthwise_ && groups_ == 1 && kh_ == 1 && kw_ == 1 && stride_ == 1 && pad_ == 0 &&
                           in_h * in_w == 1;
    if (one_pixel && (sparse_ || ks.lanes < 8)) {
        // One pixel (the convs of a squeeze-excitation gate): a matrix-vector product over the 4x1
        // blocks.  A pixel tile would compute 64 (AVX-512) or 16 (NEON) positions for one: the 32
        // gate convs of efficientnet_b0 at density 0.2 took 0.49 ms on the tile, 0.17 ms here.
        // Dense ones on wide vectors stay channel-vectorised (0.35 ms there, 0.47 ms here).
        c.path = ConvPath::Gemv, c.lanes = 4;
        c.kernel = v + "gemv_4x1";
    } else if (depthwise_flat(in_h, in_w, ks.lanes)) {
        c.path = ConvPath::DepthwiseFlat, c.lanes = ks.lanes;
        c.kernel = v + "depthwise_flat<" + std::to_string(c.lanes) + "," + std::to_string(kh_) + ">";
    } else if (depthwise_direct()) {
        c.path = ConvPath::DepthwiseDirect, c.lanes = row_lanes(ks.lanes, wo);
        c.kernel = v + lanes_name(stride_ == 2 ? "depthwise3x3s2_direct" : "depthwise3x3_direct", c.lanes);
    } else if (channel_vectorised(in_h, in_w, ks.lanes, c.dense_tile ? ks.lanes * ks.dense_vecs : 0)) {
        c.path = ConvPath::ChannelVectorised, c.lanes = ks.lanes;
        c.kernel = v + lanes_name("cv_tile", c.lanes, 7);
        c.cv_w = channel_pack(packed_.data(), row_start_.data(), out_ch_, in_ch_, bias_.data(), ks.lanes, c.cv_bias);
    } else {
        // The dense tile also takes block-sparse layers this dense (their zero blocks included).
        const bool dense_enough = !sparse_ || density_ >= kDenseTileFromDensity;
        const bool dense_path = !depthwise_ && c.dense_tile && dense_enough && groups_ == 1 && ks.dense_rows > 0;
        // Planes are padded to, and threads split at, whole tiles of the microkernel that runs.
        const int tile = layout_tile(ho, wo, ks, dense_path);
        const PlaneLayout p = plane_layout(ho, wo, kh_, kw_, stride_, pad_, tile);
        c.p = p, c.tile = tile;
        c.g.ho = ho, c.g.wo = wo, c.g.hw = ho * wo;
        c.g.wv = p.direct ? in_w : p.wq;
        c.g.qend = (ho - 1) * c.g.wv + wo;
        c.plane_floats_all = p.direct ? 0 : band_floats(p, in_ch_);
        c.lanes = pick_lanes(ks.lanes, p.qrun);
        if (depthwise_) {
            c.path = ConvPath::DepthwisePlanes, c.lanes = row_lanes(ks.lanes, wo);
            c.kernel = v + lanes_name("depthwise_range", c.lanes);
            c.tap_off.resize(static_cast<size_t>(kh_) * kw_);
            for (int ky = 0; ky < kh_; ++ky)
                for (int kx = 0; kx < kw_; ++kx)
                    c.tap_off[ky * kw_ + kx] = p.direct ? 0 : tap_offset(p, stride_, 0, ky, kx);
            c.plane_floats = p.direct ? in_h * in_w : p.pk_h * p.pk_w * p.plane;
        } else {
            c.path = ConvPath::Tile;
            c.kernel = v + lanes_name("tile_rows", c.lanes, tile == tile_of(ks) ? ks.tile_vecs : tile / c.lanes);
            if (dense_path && c.lanes == ks.lanes) {
                c.path = ConvPath::DenseTile;
                c.codes = in_ch_ * kh_ * kw_;
                c.wd = pack_dense_rows(packed_.data(), row_start_.data(), codes_.data(), c.codes, out_ch_, ks.dense_rows);
                c.groups_of_rows = (out_ch_ + ks.dense_rows - 1) / ks.dense_rows;
                c.kernel = v + "dense_tile<" + std::to_string(c.lanes) + "," + std::to_string(ks.dense_rows) + ">";
            }
            const bool dense = c.path == ConvPath::DenseTile;
            const int units = dense ? c.groups_of_rows : rows_;  // row units threads split
            // Loop order: weights bigger than the input planes -> block rows outer.
            const size_t weight_bytes = dense ? sizeof(float) * c.wd.size()
                                              : sizeof(float) * packed_.size() + sizeof(int32_t) * codes_.size();
            const size_t input_bytes =
                sizeof(float) * (p.direct ? static_cast<size_t>(in_ch_) * in_h * in_w : c.plane_floats_all);
            c.rows_outer = weight_bytes > input_bytes;
            const int64_t blocks = dense ? static_cast<int64_t>(rows_) * c.codes : row_start_.back();
            c.g.prefetch_in = !c.rows_outer && blocks <= static_cast<int64_t>(kPrefetchInputBlocks) * rows_;
            // Threads split virtual pixels when the input dominates and there are enough tiles, else
            // block rows balanced by their block counts.
            c.qrun = p.direct ? c.g.qend : p.qrun;
            c.split_q = (!c.rows_outer && c.qrun >= threads * 4 * tile) || units < threads * 4;
            if (threads > 1 && c.split_q && !p.direct) {
                c.pb = plane_layout(ho, wo, kh_, kw_, stride_, pad_, tile, threads);
                c.banded = c.pb.bands > 1;
                if (c.banded) c.band_off = make_offsets(in_h, in_w, tile, c.pb.bands, dense);
            }
            if (!c.banded) c.off = make_offsets(in_h, in_w, tile, 1, dense);
            if (c.g.prefetch_in) c.kernel += " +prefetch";
        }
    }
    std::lock_guard<std::mutex> lk(plan_cache_->m);
    auto& plans = plan_cache_->plans;
    if (plans.size() >= kPlansKept) plans.erase(plans.begin());
    plans.push_back(pl);
    return pl;
}

int Conv2d::layout_tile(int ho, int wo, const KernelSet& ks, bool dense_path) const {
    if (dense_path) return ks.lanes * ks.dense_vecs;
    const int three = 3 * ks.lanes;
    if (depthwise_ || ks.lanes < 8 || ks.tile_vecs <= 3) return tile_of(ks);
    // 7x7 on AVX-512 (49 positions, 3x3 convs on shifted planes): 48 + 1 instead of 64.
    const PlaneLayout p3 = plane_layout(ho, wo, kh_, kw_, stride_, pad_, three);
    return p3.qrun >= three && p3.qrun <= three + 2 ? three : tile_of(ks);
}

std::string Conv2d::kernel_name(int in_h, int in_w, int threads) const { return plan(in_h, in_w, threads)->kernel; }

int Conv2d::out_h(int in_h) const { return (in_h + 2 * pad_ - kh_) / stride_ + 1; }
int Conv2d::out_w(int in_w) const { return (in_w + 2 * pad_ - kw_) / stride_ + 1; }
int Conv2d::out_size(int in) const { return out_h(in); }
bool Conv2d::sparse() const { return sparse_; }
bool Conv2d::depthwise() const { return depthwise_; }
double Conv2d::density() const { return density_; }

bool Conv2d::depthwise_direct() const {
    return depthwise_ && kh_ == 3 && kw_ == 3 && (stride_ == 1 || stride_ == 2) && pad_ == 1;
}

// 3x3 on images narrower than a vector (wider ones: depthwise3x3_direct); 5x5 on any image of at
// least a vector's pixels (before: the plane kernel, vectors of a row's width, taps read at run time).
bool Conv2d::depthwise_flat(int in_h, int in_w, int lanes) const {
    const bool square = depthwise_ && kh_ == kw_ && stride_ == 1 && pad_ == kh_ / 2;
    const bool fits = in_h * in_w >= lanes;
    if (kh_ == 3) return square && in_w < lanes && fits;
    return square && kh_ == 5 && fits;
}

// Floats of a flat depthwise scratch: each channel between pad * (w + 1) zeros, then k - 1 masks.
static size_t flat_cstride(int in_h, int in_w, int k) {
    return static_cast<size_t>(in_h) * in_w + 2 * static_cast<size_t>(k / 2) * (in_w + 1);
}

// The most any runnable variant needs (a process may switch variants between calls: tests).
size_t Conv2d::scratch_floats(int in_h, int in_w, int threads) const {
    int n = 0;
    const KernelSet* const* sets = runnable_kernel_sets(&n);
    size_t most = 0;
    for (int i = 0; i < n; ++i) {
        const int lanes = sets[i]->lanes;
        if (depthwise_flat(in_h, in_w, lanes)) {  // padded channels + k - 1 lane masks
            most = std::max(most, round16(static_cast<size_t>(in_ch_) * flat_cstride(in_h, in_w, kh_)) +
                                      (kh_ - 1) * round16(in_h * in_w));
        } else if (!depthwise_direct()) {
            // Planes laid out for the 4x1 tile or, where the variant has one, the dense tile (plan).
            for (const bool dense_path : {false, true}) {
                if (dense_path && sets[i]->dense_rows == 0) continue;
                const int tile = layout_tile(out_h(in_h), out_w(in_w), *sets[i], dense_path);
                const PlaneLayout p = plane_layout(out_h(in_h), out_w(in_w), kh_, kw_, stride_, pad_, tile);
                size_t planes = p.direct ? 0 : band_floats(p, in_ch_);
                if (threads > 1 && !depthwise_ && !p.direct) {  // one band per thread (see run)
                    const PlaneLayout b = plane_layout(out_h(in_h), out_w(in_w), kh_, kw_, stride_, pad_, tile, threads);
                    planes = std::max(planes, b.bands * band_floats(b, in_ch_));
                }
                most = std::max(most, planes);
            }
        }
    }
    return most;
}

void Conv2d::run(const float* in, int in_h, int in_w, float* out, const float* residual, float* scratch,
                 ThreadPool& pool) const {
    const int ho = out_h(in_h), wo = out_w(in_w);
    if (ho < 1 || wo < 1)
        throw std::invalid_argument("Conv2d: input " + std::to_string(in_h) + "x" + std::to_string(in_w) +
                                    " is smaller than the kernel");
    const int threads = pool.size();
    const std::shared_ptr<const ConvPlan> keep = plan(in_h, in_w, threads);
    const ConvPlan& c = *keep;
    const KernelSet& ks = *c.ks;
    switch (c.path) {
        case ConvPath::DepthwiseFlat: {
            const int hw = in_h * in_w, k = kh_, pad = k / 2;
            const size_t cstride = flat_cstride(in_h, in_w, k), mstride = round16(hw), edge = pad * (in_w + 1);
            float* masks = scratch + round16(in_ch_ * cstride);  // one per column offset dx != 0
            for (int dx = -pad, j = 0; dx <= pad; ++dx) {
                if (dx == 0) continue;
                for (int q = 0; q < hw; ++q) {
                    const int x = q % in_w + dx;
                    masks[j * mstride + q] = x >= 0 && x < in_w ? 1.f : 0.f;
                }
                ++j;
            }
            parallel_ranges(pool, in_ch_, [&](int c0, int c1) {
                for (int ch = c0; ch < c1; ++ch) {
                    float* z = scratch + ch * cstride;
                    std::memset(z, 0, sizeof(float) * edge);
                    std::memcpy(z + edge, in + static_cast<size_t>(ch) * hw, sizeof(float) * hw);
                    std::memset(z + edge + hw, 0, sizeof(float) * edge);
                }
                ks.dw_flat(c.lanes, k, scratch, cstride, in_h, in_w, c0, c1, masks, mstride, dw_.data(), bias_.data(), out,
                           residual, act_);
            });
            return;
        }
        case ConvPath::DepthwiseDirect:
            parallel_ranges(pool, in_ch_, [&](int c0, int c1) {
                ks.dw3_direct(c.lanes, stride_, in, in_h, in_w, c0, c1, dw_.data(), bias_.data(), out, residual, act_);
            });
            return;
        case ConvPath::Gemv:
            parallel_ranges(pool, rows_, [&](int r0, int r1) {
                for (int r = r0; r < r1; ++r) {
                    float y[4];  // 1x1 kernel: a block's position code is its input channel
                    block_row_gemv(packed_.data(), row_start_.data(), codes_.data(), in, r, y);
                    const int n = std::min(4, out_ch_ - 4 * r);
                    simd::emit<1>(y, residual ? residual + 4 * r : nullptr, out + 4 * r, n, act_);
                }
            });
            return;
        case ConvPath::ChannelVectorised: {
            const int blocks = (out_ch_ + ks.lanes - 1) / ks.lanes;
            parallel_ranges(pool, blocks, [&](int b0, int b1) {
                ks.cv_blocks(c.cv_w.data(), c.cv_bias.data(), in, in_ch_, in_h * in_w, out_ch_, b0, b1, out, residual, act_);
            });
            return;
        }
        case ConvPath::DepthwisePlanes:
        case ConvPath::DenseTile:
        case ConvPath::Tile:
            break;
    }
    const PlaneLayout& p = c.p;
    Geometry g = c.g;
    float* planes = scratch;
    g.base = p.direct ? in : planes;
    auto planes_by_channels = [&] {
        parallel_ranges(pool, in_ch_, [&](int c0, int c1) { make_planes(in, in_h, in_w, p, stride_, pad_, c0, c1, 0, planes); });
    };
    if (c.path == ConvPath::DepthwisePlanes) {
        if (!p.direct) planes_by_channels();
        const bool k3 = kh_ * kw_ == 9;
        parallel_ranges(pool, in_ch_, [&](int c0, int c1) {
            ks.depthwise(c.lanes, k3, g, c0, c1, c.plane_floats, c.tap_off.data(), kh_ * kw_, dw_.data(), bias_.data(), out,
                         residual, act_);
        });
        return;
    }
    // Block rows [r0, r1) of the 4x1 tile, or channel groups of the dense tile.
    const bool dense = c.path == ConvPath::DenseTile;
    const int units = dense ? c.groups_of_rows : rows_;
    auto convolve = [&](const Geometry& gg, int q0, int q1, int r0, int r1, const int32_t* boff, float* o, const float* res) {
        if (q0 >= q1 || r0 >= r1) return;
        if (dense)
            ks.dense(gg, q0, q1, r0, r1, c.rows_outer, c.wd.data(), c.codes, boff, out_ch_, o, res, act_);
        else
            ks.conv(c.lanes, gg, q0, q1, r0, r1, c.rows_outer, packed_.data(), row_start_.data(), boff, out_ch_, o, res, act_);
    };
    if (c.banded) {
        // One row band per thread: thread t writes the planes of its output rows (halo rows
        // included, all channels) into its own block of the scratch and convolves them; no
        // thread reads another's planes, so no barrier between the two steps.
        const PlaneLayout& pb = c.pb;
        const size_t band = band_floats(pb, in_ch_);
        pool.for_each_thread([&](int t) {
            if (t >= pb.bands) return;
            const int y0 = t * pb.hb;
            Geometry gb = g;
            gb.ho = std::min(pb.hb, ho - y0);
            gb.wv = pb.wq;
            gb.base = planes + t * band;
            gb.qend = (gb.ho - 1) * gb.wv + wo;
            make_planes(in, in_h, in_w, pb, stride_, pad_, 0, in_ch_, y0, planes + t * band);
            const size_t o = static_cast<size_t>(y0) * wo;
            convolve(gb, 0, run_positions(gb.qend, c.tile), 0, units, c.band_off->data(), out + o,
                     residual ? residual + o : nullptr);
        });
        return;
    }
    const int32_t* boff = c.off->data();
    const int qrun = c.qrun, tile = c.tile;
    const int tiles = (qrun + tile - 1) / tile;
    auto q_split = [&](int i, int n) { return std::min(qrun, tiles * i / n * tile); };
    if (!p.direct) planes_by_channels();
    // Several parts per thread: a thread that gets descheduled leaves its parts to the others.
    const int parts = threads == 1 ? 1 : threads * 4;
    auto body = [&](int i) {
        int q0 = 0, q1 = qrun, r0 = 0, r1 = units;
        if (c.split_q) {
            q0 = q_split(i, parts);
            q1 = q_split(i + 1, parts);
        } else if (dense) {  // groups of equal work
            r0 = units * i / parts;
            r1 = units * (i + 1) / parts;
        } else {
            r0 = row_split(i, parts);
            r1 = row_split(i + 1, parts);
        }
        convolve(g, q0, q1, r0, r1, boff, out, residual);
    };
    pool.parallel_for(parts, body);
}

}  // namespace jcw
