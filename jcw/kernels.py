"""Thin facade over the compiled module `jcw._kernels` (op kernels of the sparse engine)."""

from jcw._kernels import (
    Conv2d,
    Linear,
    add_act,
    conv2d_reference,
    fma_peak_gflops,
    force_scalar,
    global_avg_pool,
    isa,
    kernel_variant,
    kernel_variants,
    max_pool2d,
    set_dense_tile,
    dense_tile,
    set_force_scalar,
    set_kernel_variant,
    simd_lanes,
)

__all__ = [
    "Conv2d",
    "Linear",
    "add_act",
    "conv2d_reference",
    "fma_peak_gflops",
    "force_scalar",
    "global_avg_pool",
    "isa",
    "kernel_variant",
    "kernel_variants",
    "max_pool2d",
    "set_dense_tile",
    "dense_tile",
    "set_force_scalar",
    "set_kernel_variant",
    "simd_lanes",
]
