"""Pruning: channel importance criteria, materializing an arch, random pruning, least-squares reconstruction."""
