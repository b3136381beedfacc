"""Torch-free base of jcw and latency: layer description, search space, errors, small file helpers."""
