"""Latency tables, profiler and predictor (numpy only: runs on a board without torch)."""
