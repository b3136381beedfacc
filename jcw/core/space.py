"""Joint channel + 4x1-block density search space: genes, bounds, decoding to Arch, MACs/params."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from jcw.core.netspec import NetSpec, load_shipped

MODES = ("joint", "channel", "weight")
BLOCK = 4  # 4x1 blocks: 4 consecutive output channels; channels are kept in multiples of 4


def default_grid() -> np.ndarray:
    """Candidate values 0.0, 0.1, ..., 1.0."""
    return np.round(np.linspace(0.0, 1.0, 11), 10)


def kept_channels(full: np.ndarray | int, ratio: np.ndarray | float) -> np.ndarray:
    """clamp(ceil(full / 4 * ratio) * 4, 4, full), vectorised (ceil tolerant to float noise)."""
    full = np.asarray(full, dtype=np.int64)
    ch = np.ceil(full / BLOCK * np.asarray(ratio, dtype=np.float64) - 1e-9).astype(np.int64) * BLOCK
    return np.minimum(np.maximum(ch, BLOCK), full)


def n_kept_blocks(n_blocks: np.ndarray | int, density: np.ndarray | float) -> np.ndarray:
    """round(density * n_blocks) (round half to even), the 4x1 blocks a layer keeps."""
    return np.round(np.asarray(density, dtype=np.float64) * np.asarray(n_blocks)).astype(np.int64)


@dataclass
class Bounds:
    """Lower bounds of the genes.  A gene's bound is the max of every rule that applies to it.

    Channel genes (one per coupling group): ``channel`` always; ``channel_first`` for the stem's
    group; ``channel_last`` for the group feeding the fc (the last conv's group);
    ``channel_strided`` for a group with a stride > 1 member conv; ``channel_residual`` for a group
    joined by a residual add.  Density genes (one per non-depthwise conv): ``density`` always;
    ``density_first`` for the stem; ``density_last`` for the last non-depthwise conv before the fc;
    ``density_strided`` for a conv with stride > 1.

    The defaults keep the stem and the classifier's input protected and leave the rest to the
    search: on every shipped table the fastest arch of the default joint space is <= 30 % of the
    unpruned latency for the ImageNet zoo models and <= 50 % for the CIFAR ones (docs/search.md has
    the floors).  ``BOUNDS_PRESETS["jcw"]`` holds JCW's published ResNet18 values.
    """

    channel: float = 0.2
    channel_first: float = 0.8
    channel_last: float = 0.5
    channel_strided: float = 0.2
    channel_residual: float = 0.2
    density: float = 0.1
    density_first: float = 0.8
    density_last: float = 0.5
    density_strided: float = 0.3

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"bound {f.name}={v} is outside [0, 1]")


BOUNDS_PRESETS = {
    "default": Bounds(),
    # JCW's search config for ResNet18 (experiments/res18-search.yaml of the official code)
    "jcw": Bounds(channel=0.5, channel_first=0.8, channel_last=0.5, channel_strided=0.6, channel_residual=0.9,
                  density=0.3, density_first=0.8, density_last=0.5, density_strided=0.8),
}


@dataclass(frozen=True)
class LayerChoice:
    """One layer of a decoded candidate: kept output/input channels and kept weight fraction."""

    name: str
    out_ch: int
    in_ch: int
    density: float


@dataclass
class Arch:
    """A decoded candidate: one LayerChoice per layer of the NetSpec, in forward order."""

    model: str
    resolution: int
    layers: list[LayerChoice] = field(default_factory=list)

    def layer(self, name: str) -> LayerChoice:
        """The choice for layer ``name``."""
        for choice in self.layers:
            if choice.name == name:
                return choice
        raise KeyError(f"arch of {self.model} has no layer {name!r}")

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Arch":
        """Inverse of ``to_dict``."""
        try:
            layers = [LayerChoice(str(x["name"]), int(x["out_ch"]), int(x["in_ch"]), float(x["density"]))
                      for x in d["layers"]]
            return cls(str(d["model"]), int(d["resolution"]), layers)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not an Arch dict (needs model, resolution, layers[name, out_ch, in_ch, "
                             f"density]): {e!r}") from None

    def to_json(self, indent: int | None = None) -> str:
        """JSON text of ``to_dict``."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "Arch":
        """Inverse of ``to_json``."""
        return cls.from_dict(json.loads(text))


class SearchSpace:
    """Genes = one channel ratio per coupling group that is not frozen, then one density per non-depthwise conv.

    Every gene lives on ``grid`` within [lower, upper] (lower = the Bounds rule maximum, raised to
    the next grid point).  Mode "channel" pins densities to 1, "weight" pins channel ratios to 1.
    All array methods take genomes of shape (N, G) or (G,).
    """

    def __init__(self, spec: NetSpec, grid=None, bounds: Bounds | None = None, mode: str = "joint") -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.spec, self.mode = spec, mode
        self.bounds = bounds or Bounds()
        self.grid = np.unique(np.round(np.asarray(default_grid() if grid is None else grid, float), 10))
        if self.grid.size == 0 or self.grid[0] < 0 or self.grid[-1] > 1:
            raise ValueError(f"grid must be non-empty values in [0, 1], got {grid}")
        layers = spec.layers
        self.channel_groups = [g.id for g in spec.groups if not g.frozen]
        # grouped convs (kept whole) have no density gene: the engine runs them as dense ungrouped convs
        self.density_layers = [i for i, x in enumerate(layers) if x.kind not in ("depthwise", "fc") and x.groups == 1]
        if [g.id for g in spec.groups] != list(range(len(spec.groups))):
            raise ValueError("spec groups must be numbered 0..G-1")
        fc = layers[-1]
        if fc.kind != "fc":
            raise ValueError("the spec's last layer must be the fc")
        b = self.bounds
        read_by_fc = {g for x in layers if x.kind == "fc" for g, _ in x.input_parts}
        lower = []
        for g in (spec.groups[i] for i in self.channel_groups):
            rules = [b.channel]
            rules += [b.channel_first] if g.id == layers[0].group else []
            rules += [b.channel_last] if g.id in read_by_fc else []
            rules += [b.channel_strided] if g.strided else []
            rules += [b.channel_residual] if g.residual else []
            lower.append(max(rules))
        last = self.density_layers[-1]
        for i in self.density_layers:
            rules = [b.density]
            rules += [b.density_first] if i == 0 else []
            rules += [b.density_last] if i == last else []
            rules += [b.density_strided] if layers[i].stride > 1 else []
            lower.append(max(rules))
        lower = np.asarray(lower, float)
        nc = len(self.channel_groups)
        if mode == "weight":
            lower[:nc] = 1.0
        if mode == "channel":
            lower[nc:] = 1.0
        top = self.grid[-1]
        if np.any(lower > top + 1e-9):
            raise ValueError(f"a lower bound exceeds the grid's largest value {top}")
        self.lower = self.grid[np.searchsorted(self.grid, lower - 1e-9)]
        self.upper = np.full_like(self.lower, top)

        self._full = np.array([g.channels for g in spec.groups], dtype=np.int64)
        self._out_res = np.array([x.out_res for x in layers], dtype=np.int64)
        self._k2 = np.array([x.kernel ** 2 for x in layers], dtype=np.int64)
        self._dw = np.array([x.kind == "depthwise" for x in layers])
        self._groups = np.array([x.groups for x in layers], dtype=np.int64)
        self._extra = np.array([int(x.bias) + 2 * int(x.norm) for x in layers], dtype=np.int64)

    @classmethod
    def for_model(cls, model: str, resolution: int | None = None, **kwargs) -> "SearchSpace":
        """Space of a zoo model from its shipped spec, optionally at another input resolution."""
        spec = load_shipped(model)
        return cls(spec if resolution is None else spec.at_resolution(resolution), **kwargs)

    @property
    def n_channel_genes(self) -> int:
        return len(self.channel_groups)

    @property
    def n_density_genes(self) -> int:
        return len(self.density_layers)

    @property
    def n_genes(self) -> int:
        return self.n_channel_genes + self.n_density_genes

    def gene_names(self) -> list[str]:
        """"channel:g<id>" per channel gene, then "density:<layer>" per density gene."""
        return [f"channel:g{g}" for g in self.channel_groups] + \
               [f"density:{self.spec.layers[i].name}" for i in self.density_layers]

    def _as2d(self, genes) -> np.ndarray:
        g = np.atleast_2d(np.asarray(genes, dtype=np.float64))
        if g.ndim != 2 or g.shape[1] != self.n_genes:
            raise ValueError(f"genomes must have shape (N, {self.n_genes}) or ({self.n_genes},), got {np.shape(genes)}")
        return g

    def snap(self, genes) -> np.ndarray:
        """Nearest grid value per gene, clipped to [lower, upper]; shape (N, G)."""
        g = self._as2d(genes)
        nearest = self.grid[np.abs(g[..., None] - self.grid).argmin(-1)]
        return np.clip(nearest, self.lower, self.upper)

    def full(self) -> np.ndarray:
        """The unpruned genome (all genes at their upper bound)."""
        return self.upper.copy()

    def minimal(self) -> np.ndarray:
        """The smallest genome (all genes at their lower bound)."""
        return self.lower.copy()

    def random(self, n: int, rng: np.random.Generator, noise: float = 0.15) -> np.ndarray:
        """n random genomes spread from the smallest arch to the full one: each draws a level
        t ~ U(0, 1) and sets every gene to lower + (upper - lower) * (t + N(0, noise)), snapped."""
        level = rng.random((n, 1)) + rng.normal(0.0, noise, (n, self.n_genes))
        return self.snap(self.lower + (self.upper - self.lower) * np.clip(level, 0.0, 1.0))

    def uniform(self, width: float, density: float = 1.0) -> np.ndarray:
        """Every channel ratio ``width`` and every density ``density``, snapped and clipped."""
        g = np.concatenate([np.full(self.n_channel_genes, width), np.full(self.n_density_genes, density)])
        return self.snap(g)[0]

    def group_channels(self, genes) -> np.ndarray:
        """(N, n_groups) kept channels of every coupling group (frozen ones: all)."""
        g = self._as2d(genes)
        ch = np.tile(self._full, (g.shape[0], 1))
        ch[:, self.channel_groups] = kept_channels(self._full[self.channel_groups], g[:, : self.n_channel_genes])
        return ch

    def decode_arrays(self, genes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(out_ch, in_ch, density), each (N, L) over all layers incl. the fc (density 1, out = classes)."""
        g = self._as2d(genes)
        ch = self.group_channels(g)
        n, layers = g.shape[0], self.spec.layers
        out_ch = np.empty((n, len(layers)), dtype=np.int64)
        in_ch = np.empty_like(out_ch)
        for i, x in enumerate(layers):
            out_ch[:, i] = x.out_ch if x.group < 0 else ch[:, x.group]
            in_ch[:, i] = sum(c if grp < 0 else ch[:, grp] for grp, c in x.input_parts)
        density = np.ones((n, len(layers)))
        density[:, self.density_layers] = np.clip(g[:, self.n_channel_genes:], 0.0, 1.0)
        return out_ch, in_ch, density

    def _kept_weights(self, out_ch, in_ch, density) -> np.ndarray:
        per_out = np.where(self._dw, 1, in_ch // self._groups) * self._k2  # weights per output channel
        blocks = -(-out_ch // BLOCK) * per_out
        return np.minimum(n_kept_blocks(blocks, density) * BLOCK, out_ch * per_out)

    def macs(self, genes) -> np.ndarray:
        """(N,) multiply-accumulates of convs + fc, counting kept (non-zero) weights only."""
        out_ch, in_ch, density = self.decode_arrays(genes)
        return (self._kept_weights(out_ch, in_ch, density) * self._out_res ** 2).sum(1)

    def params(self, genes) -> np.ndarray:
        """(N,) parameters: kept weights + biases + BatchNorm affine (2 per channel)."""
        out_ch, in_ch, density = self.decode_arrays(genes)
        return (self._kept_weights(out_ch, in_ch, density) + self._extra * out_ch).sum(1)

    def decode(self, genes) -> Arch:
        """The Arch of one genome."""
        g = self._as2d(genes)
        if g.shape[0] != 1:
            raise ValueError("decode takes one genome; use decode_arrays for many")
        out_ch, in_ch, density = (a[0] for a in self.decode_arrays(g))
        layers = [LayerChoice(x.name, int(o), int(i), float(d))
                  for x, o, i, d in zip(self.spec.layers, out_ch, in_ch, density)]
        return Arch(self.spec.model, self.spec.resolution, layers)

    def encode(self, arch: Arch) -> np.ndarray:
        """Genome of ``arch`` (grid values where possible); raises if the arch is not in this space."""
        names = [x.name for x in self.spec.layers]
        if arch.model != self.spec.model or [c.name for c in arch.layers] != names:
            raise ValueError(f"arch of {arch.model!r} does not match the layers of {self.spec.model!r}")
        genes = np.empty(self.n_genes)
        for j, gid in enumerate(self.channel_groups):
            full = int(self._full[gid])
            owner = next(i for i, x in enumerate(self.spec.layers) if x.group == gid)
            c = arch.layers[owner].out_ch
            feasible = self.grid[(self.grid >= self.lower[j] - 1e-9) & (self.grid <= self.upper[j] + 1e-9)]
            hits = feasible[kept_channels(full, feasible) == c]
            genes[j] = hits[0] if hits.size else c / full
        for j, i in enumerate(self.density_layers):
            genes[self.n_channel_genes + j] = arch.layers[i].density
        decoded = self.decode(genes)
        if decoded.layers != [LayerChoice(c.name, c.out_ch, c.in_ch, float(c.density)) for c in arch.layers]:
            bad = next(c.name for c, d in zip(arch.layers, decoded.layers) if c != d)
            raise ValueError(f"arch is not in the search space of {self.spec.model}: layer {bad!r} "
                             f"(channels must be multiples of 4 or full, coupled layers equal)")
        return genes
