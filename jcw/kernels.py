"""Thin facade over the compiled module `jcw._kernels`."""

from jcw._kernels import conv2d_reference

__all__ = ["conv2d_reference"]
