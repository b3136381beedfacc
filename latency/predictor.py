"""Predictor: network latency = interpolated per-layer costs + op costs + per-inference overhead."""

from __future__ import annotations

import numpy as np

from latency.lut import Grid, LatencyTable, LatencyTableError, describe_key, op_key


class Predictor:
    """Vectorised latency of many pruned variants of one NetSpec under one LatencyTable.

    Columns: every layer of ``spec`` (in order), then every op, whose channel count is the
    out_ch of a layer of the op's coupling group.
    """

    def __init__(self, table: LatencyTable, spec):
        table.check_covers(spec)
        self.table = table
        self.spec = spec
        entries = [table.layer(x) for x in spec.layers] + [table.op(x) for x in spec.ops]
        names = [f"layer {x.name!r} ({describe_key(e.key)})" for x, e in zip(spec.layers, entries)]
        names += [f"op {i} {describe_key(op_key(x))}" for i, x in enumerate(spec.ops)]
        self.names = names
        self.grid = Grid(entries, names)
        self.op_source = np.array([self._group_layer(x.group) for x in spec.ops], dtype=np.intp)
        self.overhead = float(table.overhead["mean"])

    def _group_layer(self, group: int) -> int:
        for i, layer in enumerate(self.spec.layers):
            if layer.group == group:
                return i
        raise LatencyTableError(f"{self.spec.model}: op refers to group {group}, which owns no layer")

    CHUNK = 2048

    def _validate(self, out_ch, in_ch, density):
        arrays = tuple(np.atleast_2d(np.asarray(a)) for a in (out_ch, in_ch, density))
        n_layers = len(self.spec.layers)
        for name, a in zip(("out_ch", "in_ch", "density"), arrays):
            if a.ndim != 2 or a.shape[1] != n_layers or a.shape != arrays[0].shape:
                raise ValueError(
                    f"{name} has shape {a.shape}; expected (N, {n_layers}) for {self.spec.model} "
                    f"with out_ch, in_ch and density of equal shape"
                )
        return arrays

    def _chunks(self, out_ch, in_ch, density):
        """(N_chunk, L + K) ms per chunk of candidates (keeps temporaries in cache)."""
        out_ch, in_ch, density = self._validate(out_ch, in_ch, density)
        for s in range(0, out_ch.shape[0], self.CHUNK):
            o = out_ch[s:s + self.CHUNK]
            ops = o[:, self.op_source]
            ones = np.ones(ops.shape)
            yield self.grid(
                np.concatenate([o, ops], axis=1),
                np.concatenate([in_ch[s:s + self.CHUNK], ones], axis=1),
                np.concatenate([density[s:s + self.CHUNK], ones], axis=1),
                first=s,
            )

    def layer_costs(self, out_ch, in_ch, density) -> np.ndarray:
        """(N, L + K) ms: every layer of the spec, then every op (labels in ``names``)."""
        return np.concatenate(list(self._chunks(out_ch, in_ch, density)), axis=0)

    def predict(self, out_ch, in_ch, density) -> np.ndarray:
        """(N,) ms for (N, L) arrays of output channels, input channels and densities."""
        return np.concatenate([c.sum(axis=1) for c in self._chunks(out_ch, in_ch, density)]) + self.overhead

    def full(self) -> float:
        """Latency (ms) of the unpruned network."""
        out = np.array([[x.out_ch for x in self.spec.layers]])
        inn = np.array([[x.in_ch for x in self.spec.layers]])
        return float(self.predict(out, inn, np.ones(out.shape))[0])
