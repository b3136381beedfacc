"""Kernel-variant autotune: time the variants this build offers on this CPU, cache and apply the fastest.

    python -m jcw.autotune [--rounds N] [--repeats R] [--show]

The load-time choice (CPUID / MIDR, ``dispatch.cpp``) is a deterministic default; where it is not
the fastest on a core (e.g. AVX-512 on a core that splits 512-bit FMAs, or an A53-tuned loop on an
unlisted in-order core), the autotune measures every offered variant on one layer of each class
the engine runs (1x1 on a large and a small image, 3x3, depthwise 3x3 stride 1 and 2), alternating
the variants inside one process, and writes the per-class and overall winners to
``$JCW_CACHE_DIR`` (else ``$XDG_CACHE_HOME/jcw``, else ``~/.cache/jcw``) as
``kernels-<cpu>-<engine version>.json``.  ``Engine`` and the latency profiler apply the record at
construction (``apply_cached``): the overall winner process-wide, and a class's own winner for the
convs of that class (``Conv2d.tune_class``) where it beat the overall one there by at least
``CLASS_MARGIN``.  On first use (no record for this CPU and engine version) they run a short tune
(``FIRST_USE_ROUNDS`` x ``FIRST_USE_REPEATS``: 0.7 s on a 2-vCPU Xeon) and cache
it; this command runs a longer one.  With ``JCW_AUTOTUNE=0``, or when ``$JCW_KERNELS`` names a
variant, nothing is measured or applied and the default stands.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from jcw import kernels

# A first use's tune: rounds of alternating variants x timed calls per layer and round.
FIRST_USE_ROUNDS, FIRST_USE_REPEATS = 3, 5
# A class runs its own winner only where it beat the overall winner there by this fraction (timing
# noise alone must not split a network between variants).
CLASS_MARGIN = 0.05

# class -> (kernel, in_ch, out_ch, image size, stride, groups, density); the names are
# Conv2d.tune_class's (tests check that each layer below falls in its own class).
CLASSES = {
    "1x1@56": (1, 64, 64, 56, 1, 1, 0.3),
    "1x1@7": (1, 320, 320, 7, 1, 1, 0.3),
    "3x3@28": (3, 64, 64, 28, 1, 1, 0.3),
    "dw3x3@56": (3, 96, 96, 56, 1, 96, 1.0),
    "dw3x3s2@56": (3, 96, 96, 56, 2, 96, 1.0),
}


def cache_dir() -> Path:
    """$JCW_CACHE_DIR, else $XDG_CACHE_HOME/jcw, else ~/.cache/jcw (as the host latency tables)."""
    if os.environ.get("JCW_CACHE_DIR"):
        return Path(os.environ["JCW_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jcw"


def cpu_model() -> str:
    """The CPU's model line from /proc/cpuinfo (x86 'model name', ARM implementer + part), else platform."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = (s.strip() for s in line.split(":", 1))
            fields.setdefault(k.lower(), v)
    if "model name" in fields:
        return fields["model name"]
    if "cpu part" in fields:
        return f"arm implementer {fields.get('cpu implementer', '?')} part {fields['cpu part']}"
    return platform.processor() or platform.machine()


def cache_path() -> Path:
    from jcw.engine.version import ENGINE_VERSION

    tag = hashlib.sha256(cpu_model().encode()).hexdigest()[:10]
    return cache_dir() / f"kernels-{tag}-{ENGINE_VERSION}.json"


def _layer(name: str, rng: np.random.Generator):
    k, cin, cout, hw, stride, groups, density = CLASSES[name]
    w = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
    if density < 1.0:  # zero whole 4x1 blocks (4 output channels at one input position)
        keep = rng.random(((cout + 3) // 4, cin // groups, k, k)) < density
        w *= np.repeat(keep, 4, axis=0)[:cout]
    conv = kernels.Conv2d(w, stride=stride, padding=k // 2, groups=groups, act="relu")
    return conv, rng.standard_normal((cin, hw, hw)).astype(np.float32)


def tune(rounds: int = 5, repeats: int = 10, variants: list[str] | None = None) -> dict:
    """Time every offered variant (all but scalar) per class; returns the record `write` caches."""
    from jcw.engine.version import ENGINE_VERSION

    offered = [v for v in kernels.kernel_variants() if v != "scalar"]
    variants = variants or offered
    before = kernels.kernel_variant()
    rng = np.random.default_rng(0)
    ms: dict[str, dict[str, float]] = {}
    try:
        for cls in CLASSES:
            conv, x = _layer(cls, rng)
            best = {v: float("inf") for v in variants}
            for _ in range(rounds):  # variants alternate inside each round: load hits them alike
                for v in variants:
                    kernels.set_kernel_variant(v)
                    best[v] = min(best[v], float(np.median(conv.benchmark(x, repeats, 2))))
            ms[cls] = best
    finally:
        kernels.set_kernel_variant(before)
    per_class = {cls: min(t, key=t.get) for cls, t in ms.items()}
    # Overall: the smallest geometric mean of time relative to the class's fastest variant.
    score = {v: float(np.exp(np.mean([np.log(ms[c][v] / min(ms[c].values())) for c in ms]))) for v in variants}
    return {"cpu": cpu_model(), "engine_version": ENGINE_VERSION, "default": before,
            "variant": min(score, key=score.get), "per_class": per_class, "relative": score, "ms": ms}


def write(record: dict, path: Path | None = None) -> Path:
    path = path or cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def cached() -> dict | None:
    """The cached record for this CPU and engine version, or None."""
    from jcw.engine.version import ENGINE_VERSION

    try:
        rec = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return None
    if rec.get("engine_version") != ENGINE_VERSION or rec.get("cpu") != cpu_model():
        return None
    return rec


def enabled() -> bool:
    """False under JCW_AUTOTUNE=0 or an explicit $JCW_KERNELS: the default (or named) variant stands."""
    return os.environ.get("JCW_AUTOTUNE", "1") != "0" and not os.environ.get("JCW_KERNELS")


def class_winners(rec: dict) -> dict[str, str]:
    """The classes whose own winner beat the record's overall variant there by CLASS_MARGIN: class -> variant."""
    overall, ms = rec.get("variant"), rec.get("ms") or {}
    out = {}
    for cls, v in (rec.get("per_class") or {}).items():
        t = ms.get(cls) or {}
        if v != overall and v in t and overall in t and t[v] < (1 - CLASS_MARGIN) * t[overall]:
            out[cls] = v
    return out


def apply_cached(tune_missing: bool = False) -> str | None:
    """Apply the cached record when allowed: its overall variant process-wide, then each class's own
    winner (``class_winners``) for that class's convs.  ``tune_missing``: with no record for this CPU
    and engine version, run a short tune first and cache it (first use; a cache dir that cannot be
    written keeps the result for this process only).  Returns the overall variant applied, or None
    (default kept)."""
    if not enabled():
        return None
    rec = cached()
    if rec is None and tune_missing:
        rec = tune(FIRST_USE_ROUNDS, FIRST_USE_REPEATS)
        try:
            write(rec)
        except OSError:
            pass
    offered = kernels.kernel_variants()
    if not rec or rec.get("variant") not in offered or kernels.force_scalar():
        return None
    if kernels.kernel_variant() != rec["variant"]:
        kernels.set_kernel_variant(rec["variant"])
    kernels.clear_class_variants()
    for cls, v in class_winners(rec).items():
        if v in offered and v != "scalar":
            kernels.set_class_variant(cls, v)
    return rec["variant"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds of alternating variants (default 5)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per layer and round (default 10)")
    p.add_argument("--show", action="store_true", help="print the cached record and exit")
    a = p.parse_args(argv)
    if a.show:
        rec = cached()
        print(json.dumps(rec, indent=1) if rec else f"no autotune cache for this CPU and engine ({cache_path()})")
        return 0
    if a.rounds < 1 or a.repeats < 1:
        p.error("--rounds and --repeats must be >= 1")
    rec = tune(a.rounds, a.repeats)
    path = write(rec)
    own = class_winners(rec)
    print(f"CPU {rec['cpu']}: default {rec['default']}, fastest overall {rec['variant']} "
          f"(relative {', '.join(f'{v} {s:.2f}' for v, s in rec['relative'].items())}); per class "
          f"{', '.join(f'{c} {v}' for c, v in rec['per_class'].items())}; applied per class (>= "
          f"{CLASS_MARGIN:.0%} faster there): {', '.join(f'{c} {v}' for c, v in own.items()) or 'none'}; cached in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
