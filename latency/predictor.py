"""Predictor: network latency = interpolated per-layer costs + op costs + the per-inference input cost."""

from __future__ import annotations

import numpy as np

from jcw.core.netspec import load_shipped, shipped_models
from latency.lut import Grid, LatencyTable, describe_key, describe_layer, op_key, table_ops
from jcw.core.errors import UsageError


class Predictor:
    """Vectorised latency of many pruned variants of one NetSpec under one LatencyTable.

    Columns: every layer of ``spec`` (in order), then every op of ``table_ops(spec)``.  An op's
    channel count is the sum over its channel parts (``OpSpec.channel_parts``: one unless it works
    on a concatenation) of the out_ch of a layer of the part's coupling group, or of the part's
    full channels for group -1 (never pruned; the input cost's are fixed too).  Layers take the
    (out_ch, in_ch, density) they are given (``SearchSpace.decode_arrays``: fixed output channels
    for group -1, input channels summed over concatenated parts).
    """

    def __init__(self, table: LatencyTable, spec):
        table.check_covers(spec)
        self.table = table
        self.spec = spec
        ops = table_ops(spec)
        entries = [table.layer(x) for x in spec.layers] + [table.op(x) for x in ops]
        names = [f"layer {x.name!r} ({describe_key(e.key)})" for x, e in zip(spec.layers, entries)]
        names += [f"op {i} {describe_key(op_key(x))}" for i, x in enumerate(ops)]
        self.names = names
        self.grid = Grid(entries, names)
        # op channels = op_fixed + out_ch @ op_parts: a (layers x ops) count of the pruned parts each
        # op's channels are made of (the out_ch of one layer per part's group), the fixed parts' sum.
        self.op_fixed = np.zeros(len(ops))
        self.op_parts = np.zeros((len(spec.layers), len(ops)))
        for k, x in enumerate(ops):
            for group, channels in getattr(x, "channel_parts", ((x.group, x.channels),)):
                if group < 0:
                    self.op_fixed[k] += channels
                else:
                    self.op_parts[self._group_layer(group), k] += 1.0
        self.op_channels = np.array([x.channels for x in ops], dtype=float)

    def _group_layer(self, group: int) -> int:
        for i, layer in enumerate(self.spec.layers):
            if layer.group == group:
                return i
        raise UsageError(f"{self.spec.model}: op refers to group {group}, which owns no layer")

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
            ops = self.op_fixed + o.astype(float) @ self.op_parts
            ones = np.ones(ops.shape)
            yield self.grid(
                np.concatenate([o, ops], axis=1),
                np.concatenate([in_ch[s:s + self.CHUNK], ones], axis=1),
                np.concatenate([density[s:s + self.CHUNK], ones], axis=1),
                first=s,
            )

    def layer_costs(self, out_ch, in_ch, density) -> np.ndarray:
        """(N, L + K) ms: every layer of the spec, then every table op (labels in ``names``)."""
        return np.concatenate(list(self._chunks(out_ch, in_ch, density)), axis=0)

    def predict(self, out_ch, in_ch, density) -> np.ndarray:
        """(N,) ms for (N, L) arrays of output channels, input channels and densities."""
        return np.concatenate([c.sum(axis=1) for c in self._chunks(out_ch, in_ch, density)])

    def predict_arch(self, arch) -> float:
        """Milliseconds of one Arch (a jcw.core.space.Arch of this spec's model; its classifier is priced at
        this spec's class count)."""
        by_name = {c.name: c for c in arch.layers}
        try:
            chosen = [by_name[x.name] for x in self.spec.layers]
        except KeyError as e:
            raise UsageError(f"arch has no layer {e.args[0]!r} of {self.spec.model}") from None
        out_ch = [[x.out_ch if x.kind == "fc" and x.group < 0 else c.out_ch for x, c in zip(self.spec.layers, chosen)]]
        in_ch = [[c.in_ch for c in chosen]]
        density = [[c.density for c in chosen]]
        return float(self.predict(np.array(out_ch), np.array(in_ch), np.array(density, dtype=float))[0])

    def full(self) -> float:
        """Latency (ms) of the unpruned network."""
        out = np.array([[x.out_ch for x in self.spec.layers]])
        inn = np.array([[x.in_ch for x in self.spec.layers]])
        return float(self.predict(out, inn, np.ones(out.shape))[0])


def predictor_for(table: LatencyTable, spec) -> Predictor:
    """The predictor of ``spec`` on ``table``.  A table lacking only the classifier at ``spec``'s class count
    (tables are made for the zoo's own heads) prices it with the shipped zoo spec's classifier, so every other
    layer stays exact; ``predict_arch`` and a SearchSpace over ``predictor.spec`` query that classifier."""
    if spec.model in shipped_models() and table.missing(spec) == [describe_layer(spec.layers[-1])]:
        shipped = load_shipped(spec.model).at_resolution(spec.resolution)
        if not table.missing(shipped):
            return Predictor(table, shipped)
    return Predictor(table, spec)
