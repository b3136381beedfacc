"""Parity of the compiled op kernels (jcw.kernels) against torch, and the C++/ARM harness."""

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jcw import kernels

ROOT = Path(__file__).resolve().parents[1]

CONV_CASES = [
    # in_ch, out_ch, h, w, k, stride, pad, groups, density, act, residual, mode
    (24, 36, 14, 14, 1, 1, 0, 1, 0.2, "relu", False, "auto"),
    (17, 10, 9, 7, 1, 1, 0, 1, 1.0, "none", True, "auto"),
    (30, 19, 21, 21, 1, 1, 0, 1, 0.1, "relu6", True, "sparse"),
    (16, 22, 15, 15, 1, 2, 0, 1, 0.5, "relu", False, "auto"),
    (13, 7, 10, 9, 3, 1, 1, 1, 1.0, "relu6", True, "dense"),
    (9, 14, 11, 13, 3, 1, 1, 1, 0.3, "relu", False, "auto"),
    (12, 18, 17, 17, 3, 2, 1, 1, 0.3, "none", False, "auto"),
    (8, 9, 6, 6, 3, 1, 1, 1, 0.0, "relu", False, "auto"),
    (3, 10, 23, 23, 7, 2, 3, 1, 1.0, "relu", False, "auto"),
    (8, 12, 9, 9, 3, 1, 1, 2, 0.5, "none", False, "auto"),
    (10, 10, 16, 16, 3, 1, 1, 10, 1.0, "relu6", False, "auto"),
    (12, 12, 15, 13, 3, 2, 1, 12, 1.0, "relu", True, "auto"),
    (6, 6, 3, 3, 3, 1, 1, 6, 1.0, "none", False, "auto"),
    (6, 10, 2, 3, 3, 1, 1, 1, 0.6, "none", True, "auto"),
    (96, 22, 5, 6, 3, 1, 1, 1, 0.7, "relu", True, "auto"),
    (20, 20, 14, 14, 3, 1, 1, 20, 1.0, "relu6", True, "auto"),
    (20, 20, 29, 29, 3, 2, 1, 20, 1.0, "none", False, "auto"),
    (16, 16, 28, 30, 3, 2, 1, 16, 1.0, "relu6", True, "auto"),
    (8, 8, 5, 5, 5, 2, 2, 8, 1.0, "relu", False, "auto"),
    (12, 12, 9, 13, 3, 1, 1, 12, 1.0, "relu", True, "auto"),
    (300, 30, 6, 5, 1, 1, 0, 1, 0.9, "relu6", False, "auto"),
    # dense 1x1 on small images run vectorised over output channels (channel-block and pixel tails)
    (40, 37, 7, 7, 1, 1, 0, 1, 1.0, "relu", True, "dense"),
    (64, 50, 8, 8, 1, 1, 0, 1, 1.0, "relu6", False, "auto"),
    (33, 16, 5, 3, 1, 1, 0, 1, 1.0, "none", True, "auto"),
    (70, 21, 1, 1, 1, 1, 0, 1, 1.0, "relu", False, "dense"),
    # 1x1 on a single pixel (squeeze-excitation convs): a matrix-vector product over the blocks
    (96, 23, 1, 1, 1, 1, 0, 1, 0.3, "relu6", True, "auto"),
    (9, 40, 1, 1, 1, 1, 0, 1, 0.6, "none", False, "sparse"),
    # dense groups 1 on the dense register tile where the variant has one (a last group of 4 rows,
    # 3-vector tiles, 1-vector tails and an overlapped last vector, discarded padding columns)
    (20, 20, 17, 19, 3, 1, 1, 1, 1.0, "relu", True, "dense"),
    (48, 13, 12, 12, 1, 1, 0, 1, 1.0, "relu6", False, "auto"),
    # depthwise 5x5 stride 1 over flattened channels (column masks), 7x7 s1 and 5x5 s2 on planes
    (9, 9, 7, 7, 5, 1, 2, 9, 1.0, "relu", True, "auto"),
    (5, 5, 13, 18, 5, 1, 2, 5, 1.0, "none", False, "auto"),
    (4, 4, 9, 11, 7, 1, 3, 4, 1.0, "relu6", True, "auto"),
    (6, 6, 15, 15, 5, 2, 2, 6, 1.0, "relu", False, "auto"),
]


def block_pruned(rng, out_ch, in_per_group, k, density):
    """Random OIHW weight with whole 4x1 blocks (4 output channels at one input position) zeroed."""
    w = rng.standard_normal((out_ch, in_per_group, k, k)).astype(np.float32)
    rows = -(-out_ch // 4)
    keep = rng.random((rows, in_per_group, k, k)) < density
    mask = np.repeat(keep, 4, axis=0)[:out_ch]
    return w * mask


def torch_conv(x, w, b, stride, pad, groups, act, residual):
    y = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), torch.from_numpy(b).double(),
                 stride=stride, padding=pad, groups=groups)
    if residual is not None:
        y = y + torch.from_numpy(residual).double()
    if act == "relu":
        y = y.clamp(min=0)
    elif act == "relu6":
        y = y.clamp(0, 6)
    return y.numpy()


# Every kernel variant this CPU runs (e.g. avx512, avx2, sse2, scalar), each microkernel of each
# checked against torch: the preferred variant with 1 and 2 threads, the others with 1.
VARIANTS = kernels.kernel_variants()
VARIANT_THREADS = [(VARIANTS[0], 2)] + [(v, 1) for v in VARIANTS]


@contextlib.contextmanager
def variant(name):
    before = kernels.kernel_variant()
    kernels.set_kernel_variant(name)
    try:
        yield
    finally:
        kernels.set_kernel_variant(before)
        kernels.set_force_scalar(False)


@pytest.mark.parametrize("variant_name,threads", VARIANT_THREADS)
@pytest.mark.parametrize("cin,cout,h,w,k,stride,pad,groups,density,act,res,mode", CONV_CASES)
def test_conv_matches_torch(cin, cout, h, w, k, stride, pad, groups, density, act, res, mode, variant_name, threads):
    rng = np.random.default_rng(cin * 1000 + cout * 10 + k)
    wt = block_pruned(rng, cout, cin // groups, k, density)
    b = rng.standard_normal(cout).astype(np.float32)
    x = rng.standard_normal((2, cin, h, w)).astype(np.float32)
    conv = kernels.Conv2d(wt, b, stride=stride, padding=pad, groups=groups, act=act, mode=mode, threads=threads)
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    residual = rng.standard_normal((2, cout, oh, ow)).astype(np.float32) if res else None
    with variant(variant_name):
        got = conv.run(x, residual)
    want = torch_conv(x, wt, b, stride, pad, groups, act, residual)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant_name", VARIANTS)
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise3x3_sweep_matches_torch(stride, variant_name):
    """Depthwise 3x3 padding 1 over heights 1-7 (single rows and row pairs) and widths around 4, 8 and
    16 lanes (first / last / overlapped vectors, odd widths), with residual."""
    rng = np.random.default_rng(100 + stride)
    with variant(variant_name):
        for h in (1, 2, 3, 4, 5, 7):
            for w in (1, 3, 4, 5, 8, 9, 15, 16, 17, 31, 33, 40):
                c = 3
                wt = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
                b = rng.standard_normal(c).astype(np.float32)
                x = rng.standard_normal((1, c, h, w)).astype(np.float32)
                oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
                res = rng.standard_normal((1, c, oh, ow)).astype(np.float32)
                conv = kernels.Conv2d(wt, b, stride=stride, padding=1, groups=c, act="none")
                want = torch_conv(x, wt, b, stride, 1, c, "none", res)
                np.testing.assert_allclose(conv.run(x, res), want, rtol=1e-4, atol=1e-4,
                                           err_msg=f"h={h} w={w} stride={stride}")


@pytest.mark.parametrize("variant_name", VARIANTS)
@pytest.mark.parametrize("k", [5, 7])
def test_depthwise_kxk_flat_sweep_matches_torch(k, variant_name):
    """Depthwise 5x5 (flattened channels) / 7x7 (planes) stride 1 "same" padding over heights and widths around the vector lengths
    and the kernel's reach (rows narrower than the padding, single rows, overlapped last vectors),
    with residual: the flattened-channel kernel's zero rows and column masks."""
    rng = np.random.default_rng(200 + k)
    p = k // 2
    with variant(variant_name):
        for h in (1, 2, 3, 5, 8, 17):
            for w in (1, 2, 3, 4, 5, 7, 9, 16, 19, 33):
                c = 3
                wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
                b = rng.standard_normal(c).astype(np.float32)
                x = rng.standard_normal((1, c, h, w)).astype(np.float32)
                res = rng.standard_normal((1, c, h, w)).astype(np.float32)
                conv = kernels.Conv2d(wt, b, stride=1, padding=p, groups=c, act="relu")
                want = torch_conv(x, wt, b, 1, p, c, "relu", res)
                np.testing.assert_allclose(conv.run(x, res), want, rtol=1e-4, atol=1e-4,
                                           err_msg=f"k={k} h={h} w={w} {conv.kernel_name(h, w)}")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_padded_conv_sweep_matches_torch(threads):
    """Padded convolutions over the input re-layouts: stride 1 "same" padding on narrow images (the
    flat shifted copy, including rows narrower than the padding), wide images (row copies), stride 2
    and 3 (phase planes), and padding other than "same"; with several threads, layers with few
    output channels split pixels: each thread writes and convolves its own band of output rows,
    halo rows included (the last band shorter, threads beyond the rows idle), residual included."""
    rng = np.random.default_rng(7)
    cases = [(k, s, pad, h, w) for k in (3, 5, 7) for s in (1, 2) for h, w in ((40, 1), (20, 2), (9, 5), (33, 14), (6, 70))
             for pad in ((k - 1) // 2, 1)] + [(3, 3, 1, 20, 17), (5, 1, 0, 30, 9)]
    for i, (k, s, pad, h, w) in enumerate(cases):
        if h + 2 * pad < k or w + 2 * pad < k:
            continue
        wt = block_pruned(rng, 6, 5, k, 0.6)
        b = rng.standard_normal(6).astype(np.float32)
        x = rng.standard_normal((1, 5, h, w)).astype(np.float32)
        conv = kernels.Conv2d(wt, b, stride=s, padding=pad, act="none", threads=threads)
        ho, wo = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
        res = rng.standard_normal((1, 6, ho, wo)).astype(np.float32) if i % 2 else None
        want = torch_conv(x, wt, b, s, pad, 1, "none", res)
        got = conv.run(x) if res is None else conv.run(x, res)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"k={k} s={s} pad={pad} h={h} w={w}")


@pytest.mark.parametrize("name,threads", VARIANT_THREADS)
def test_sparse_tile_with_positions_riding_along_matches_torch(name, threads):
    """Block-sparse convs whose image is 3 vectors + 0-2 positions on 16 lanes (7x7 = 48 + 1: 1x1,
    and 3x3 on shifted planes; 5x10, 6x8, 7x7 stride 2 = 55 stays on 4 vectors) or whole tiles +
    1-4 positions (14x14, 5x13, 3x22), with a residual and ReLU6, on every variant this CPU runs:
    a tile carries the last positions in 4-lane accumulators over the block's 4 output channels."""
    rng = np.random.default_rng(23)
    cases = [(64, 36, 1, 1, 7, 7), (48, 20, 3, 1, 7, 7), (40, 24, 1, 1, 5, 10), (40, 24, 1, 1, 6, 8),
             (24, 16, 3, 2, 14, 14), (30, 18, 3, 1, 7, 14),
             # 14x14 = 3 x 64 + 4 (1x1, and 3x3 on shifted planes), 5x13 = 64 + 1, 3x22 = 64 + 2
             (32, 20, 1, 1, 14, 14), (24, 28, 3, 1, 14, 14), (16, 12, 1, 1, 5, 13), (20, 8, 1, 1, 3, 22)]
    with variant(name):
        for cin, cout, k, s, h, w in cases:
            wt = block_pruned(rng, cout, cin, k, 0.3)
            b = rng.standard_normal(cout).astype(np.float32)
            x = rng.standard_normal((1, cin, h, w)).astype(np.float32)
            conv = kernels.Conv2d(wt, b, stride=s, padding=k // 2, act="relu6", threads=threads)
            assert conv.sparse
            ho, wo = (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1
            res = rng.standard_normal((1, cout, ho, wo)).astype(np.float32)
            want = torch_conv(x, wt, b, s, k // 2, 1, "relu6", res)
            np.testing.assert_allclose(conv.run(x, res), want, rtol=1e-4, atol=1e-4,
                                       err_msg=f"{name} {cin}->{cout} k{k} s{s} {h}x{w} {conv.kernel_name(h, w)}")
            if kernels.simd_lanes() == 16 and ho * wo in (48, 49, 50) and (k == 1 or s == 1):
                assert "tile_rows<16,3>" in conv.kernel_name(h, w)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_dense_tile_matches_the_4x1_tile_and_torch(threads):
    """Dense groups-1 convs on the dense register tile (where the variant has one) against the 4x1
    tile they otherwise run on and against torch: channel counts around the tile's 8 rows, tiles of
    3 vectors, 1-vector tails and overlapped last vectors, stride 2, residual; with several threads
    the split goes over pixels (few groups) or channel groups (many).  Block-sparse layers of block
    density >= 0.85 run on it too (their missing blocks as zeros), sparser ones on the 4x1 tile."""
    rng = np.random.default_rng(11)
    cases = [(16, 8, 1, 1, 30, 30, 1.0), (19, 13, 3, 1, 23, 23, 1.0), (9, 37, 3, 2, 31, 29, 1.0),
             (64, 70, 1, 1, 14, 14, 1.0), (32, 96, 3, 1, 7, 7, 1.0), (5, 17, 5, 1, 11, 40, 1.0),
             (24, 21, 3, 1, 19, 17, 0.93), (40, 36, 1, 1, 15, 15, 0.9), (24, 21, 3, 1, 19, 17, 0.5),
             # whole 48-position tiles only (6x8), and 1 or 2 positions riding along with the last
             # tile: 1x1 @7x7, 1x1 @5x10, stride 2 onto 3x16 (3 rows of 16 + 1 discarded column)
             (40, 27, 1, 1, 6, 8, 1.0), (40, 27, 1, 1, 7, 7, 1.0), (33, 20, 1, 1, 5, 10, 1.0),
             (8, 20, 3, 2, 6, 32, 1.0), (16, 17, 1, 1, 7, 14, 1.0)]
    try:
        for cin, cout, k, s, h, w, density in cases:
            wt = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
            if density < 1:  # exactly this fraction of the 4x1 blocks kept
                rows = -(-cout // 4)
                n = rows * cin * k * k
                keep = np.zeros(n, bool)
                keep[rng.choice(n, int(round(density * n)), replace=False)] = True
                wt *= np.repeat(keep.reshape(rows, cin, k, k), 4, axis=0)[:cout]
            b = rng.standard_normal(cout).astype(np.float32)
            x = rng.standard_normal((1, cin, h, w)).astype(np.float32)
            conv = kernels.Conv2d(wt, b, stride=s, padding=k // 2, act="relu", mode="auto", threads=threads)
            assert conv.sparse == (density < 1)
            ho, wo = (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1
            res = rng.standard_normal((1, cout, ho, wo)).astype(np.float32)
            want = torch_conv(x, wt, b, s, k // 2, 1, "relu", res)
            got = {}
            for on in (True, False):
                kernels.set_dense_tile(on)
                got[on] = conv.run(x, res)
                name = conv.kernel_name(h, w)
                assert ("dense_tile" in name) == (on and kernels.simd_lanes() == 16 and density >= 0.85), name
            for on in (True, False):
                np.testing.assert_allclose(got[on], want, rtol=1e-4, atol=1e-4, err_msg=f"{cin}->{cout} k{k} s{s} {h}x{w} {on}")
    finally:
        kernels.set_dense_tile(True)


def test_conv_dispatch_and_density():
    rng = np.random.default_rng(7)
    dense = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    assert not kernels.Conv2d(dense, padding=1).sparse
    pruned = block_pruned(rng, 16, 8, 3, 0.3)
    conv = kernels.Conv2d(pruned, padding=1)
    rows = pruned.reshape(4, 4, 8 * 9)
    want = np.any(rows != 0, axis=1).mean()
    assert conv.sparse and conv.density == pytest.approx(want)
    assert not kernels.Conv2d(pruned, padding=1, mode="dense").sparse
    assert kernels.Conv2d(np.zeros((5, 3, 1, 1), np.float32)).density == 0.0
    assert kernels.Conv2d(dense[:, :1], groups=16, padding=1).depthwise


def test_conv_rejects_bad_input():
    w = np.ones((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="act must be"):
        kernels.Conv2d(w, act="tanh")
    with pytest.raises(ValueError, match="mode must be"):
        kernels.Conv2d(w, mode="fast")
    with pytest.raises(ValueError, match="divisible by groups"):
        kernels.Conv2d(w, groups=3)
    conv = kernels.Conv2d(w)
    with pytest.raises(ValueError, match="C = 3"):
        conv.run(np.ones((4, 8, 8), np.float32))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        conv.run(np.ones((3, 2, 2), np.float32))


@pytest.mark.parametrize("density,mode", [(0.0, "auto"), (0.3, "auto"), (0.3, "dense"), (1.0, "auto"), (1.0, "sparse")])
@pytest.mark.parametrize("threads", [1, 2])
def test_linear_matches_numpy(density, mode, threads):
    rng = np.random.default_rng(11)
    w = block_pruned(rng, 21, 37, 1, density)[:, :, 0, 0]
    b = rng.standard_normal(21).astype(np.float32)
    x = rng.standard_normal((3, 37)).astype(np.float32)
    fc = kernels.Linear(w, b, act="relu", mode=mode, threads=threads)
    want = np.maximum(x.astype(np.float64) @ w.T.astype(np.float64) + b, 0)
    np.testing.assert_allclose(fc.run(x), want, rtol=1e-5, atol=1e-5)


def test_pools_and_add_match_torch():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 9, 11)).astype(np.float32)
    want = F.max_pool2d(torch.from_numpy(x)[None], 3, 2, 1)[0].numpy()
    np.testing.assert_array_equal(kernels.max_pool2d(x, 3, 2, 1, threads=2), want)
    np.testing.assert_allclose(kernels.global_avg_pool(x), x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    y = rng.standard_normal(x.shape).astype(np.float32) * 4
    np.testing.assert_allclose(kernels.add_act(x, y, "relu6"), np.clip(x + y, 0, 6), rtol=1e-6)


@pytest.mark.parametrize("k,stride,pad", [(3, 2, 1), (2, 2, 0), (3, 1, 1), (5, 2, 2), (4, 2, 1)])
@pytest.mark.parametrize("h,w", [(9, 11), (24, 70), (15, 112)])
def test_max_pool_matches_torch_on_vector_bodies_and_tails(k, stride, pad, h, w):
    # Widths from below one vector to many (the stride-2 path runs vectors of outputs, then a tail).
    x = np.random.default_rng(h * w + k).standard_normal((3, h, w)).astype(np.float32)
    want = F.max_pool2d(torch.from_numpy(x)[None], k, stride, pad)[0].numpy()
    np.testing.assert_array_equal(kernels.max_pool2d(x, k, stride, pad), want)


def test_isa_is_reported():
    assert kernels.isa() in {"avx512", "avx2", "sse2", "neon", "scalar"}
    assert kernels.simd_lanes() in {1, 4, 8, 16}


def test_kernel_variants_are_selectable():
    assert VARIANTS[-1] == "scalar" and kernels.kernel_variant() in VARIANTS
    assert set(VARIANTS) <= {"avx512", "avx2", "sse2", "neon", "neon_a53", "native", "scalar"}
    for name in VARIANTS:
        with variant(name):
            assert kernels.kernel_variant() == name
            assert (kernels.isa() == "scalar") == (name == "scalar")
    with pytest.raises(ValueError, match="kernel variant must be one of"):
        kernels.set_kernel_variant("mmx")


@pytest.mark.parametrize("variant_name", VARIANTS)
def test_cases_reach_every_microkernel(variant_name):
    """The parity cases above run each microkernel of each variant (so no kernel goes untested)."""
    seen = set()
    with variant(variant_name):
        lanes = kernels.simd_lanes()
        for cin, cout, h, w, k, stride, pad, groups, density, act, res, mode in CONV_CASES:
            wt = np.ones((cout, cin // groups, k, k), np.float32)
            conv = kernels.Conv2d(wt, stride=stride, padding=pad, groups=groups, mode=mode)
            name = conv.kernel_name(h, w)
            assert name.startswith(variant_name + " ")
            seen.add(name.split()[1].split("<")[0])
    want = {"tile_rows", "depthwise3x3_direct", "depthwise3x3s2_direct", "depthwise_range", "gemv_4x1"}
    if lanes > 1:
        want.add("depthwise_flat")
    if lanes >= 8:  # channel-vectorised dense 1x1 on small images: wide vectors only
        want.add("cv_tile")
    if lanes == 16:  # the dense register tile: 32 vector registers of 16 lanes
        want.add("dense_tile")
    assert want <= seen, want - seen


def test_arm_harness_under_qemu(tmp_path):
    missing = [t for t in ("aarch64-linux-gnu-g++", "qemu-aarch64") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"cross tools missing ({', '.join(missing)}): apt-get install -y g++-aarch64-linux-gnu qemu-user")
    env = dict(os.environ, JCW_HARNESS_BUILD=str(tmp_path))
    proc = subprocess.run(["bash", str(ROOT / "kernels/tests/run_harness.sh"), "arm"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK:" in proc.stdout and "isa=neon" in proc.stdout


def test_the_a53_depthwise_assembly_is_what_its_generator_writes():
    """kernels/src/micro/depthwise_a53.h is generated (its schedule comes from the generator's list
    scheduler): a hand edit, or a generator change not written out, fails here."""
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "kernels/src/micro/gen_depthwise_a53.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
