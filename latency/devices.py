"""Device registry: which LatencyTable a --device name means (shipped a53/a72, cached host, or a file)."""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

from latency.devicemodel import BOARDS, CORES, THREADS, table_path
from latency.lut import LatencyTable
from jcw.core.errors import UsageError
from jcw.core.netspec import load_shipped

SHIPPED = tuple(sorted(BOARDS))


def cache_dir() -> Path:
    """Where host tables are cached: $JCW_CACHE_DIR, else $XDG_CACHE_HOME/jcw, else ~/.cache/jcw."""
    if os.environ.get("JCW_CACHE_DIR"):
        return Path(os.environ["JCW_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jcw"


def host_table_path(threads: int) -> Path:
    """The cached table of this CPU + engine version + profiling method + thread count."""
    from jcw.engine import ENGINE_VERSION
    from latency.profile import METHOD, machine_info

    cpu = machine_info(threads)[0]["cpu"]
    tag = hashlib.sha256(f"{cpu}|{platform.machine()}|{platform.node()}".encode()).hexdigest()[:10]
    return cache_dir() / f"host-{tag}-{ENGINE_VERSION}-{METHOD}-{threads}t.json"


def _spec(model: str, resolution: int | None):
    try:
        spec = load_shipped(model)
        return spec if resolution is None else spec.at_resolution(resolution)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _covering(table: LatencyTable, spec, what: str, remedy: str) -> LatencyTable:
    try:
        table.check_covers(spec)
    except UsageError as e:
        raise UsageError(f"{what}: {e}; {remedy}") from None
    return table


def modelled_table(device: str, threads: int, spec) -> LatencyTable:
    """The device model's table of ``device`` at ``threads`` for any NetSpec, built on first use and
    cached in ``cache_dir()/modelled`` (keyed by the spec, the threads, every cycle count of
    kernel_cycles.json, the board constants and the cost model's own source)."""
    import json

    from latency import devicemodel
    from latency.devicemodel import build_table, load_kernel_cycles

    entries = load_kernel_cycles()
    cycles = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    code = hashlib.sha256(Path(devicemodel.__file__).read_bytes()).hexdigest()
    key = hashlib.sha256(f"{spec.to_json()}|{cycles}|{code}|{BOARDS[device]!r}".encode()).hexdigest()[:12]
    path = cache_dir() / "modelled" / f"{device}-{threads}t-{spec.model}@{spec.resolution}-{key}.json"
    if path.exists():
        return LatencyTable.load(path)
    table = build_table(device, threads, models=(), specs=[spec], entries=entries)
    table.save(path)
    return table


def resolve_table(device: str, model: str, threads: int = 1, resolution: int | None = None,
                  progress: bool = True, spec=None) -> LatencyTable:
    """The table for ``device`` covering ``model`` at ``resolution`` (None: the model's default), or
    covering ``spec`` (a NetSpec) when given.

    ``device``: "a53" / "a72" (modelled: the shipped tables for 1 and 4 threads, or a table the
    device model builds for any other network, resolution or thread count on first use, then
    cached), "host" (measured on this machine with the quick grid on first use, then cached per CPU
    + engine version + threads), or a path to a table JSON.  Raises UsageError saying what
    is accepted.
    """
    if not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    if device in SHIPPED:
        spec = _spec(model, resolution) if spec is None else spec
        if threads > CORES:
            raise UsageError(
                f"the {device} board has {CORES} cores, not {threads}; accepted --threads: 1-{CORES} "
                f"(tables for {' and '.join(map(str, THREADS))} ship, others are modelled on first use)"
            )
        if threads in THREADS:
            table = LatencyTable.load(table_path(device, threads))
            if not table.missing(spec):
                return table
        return modelled_table(device, threads, spec)
    spec = _spec(model, resolution) if spec is None else spec
    if device == "host":
        from latency.profile import ProfileConfig, profile

        path = host_table_path(threads)
        if path.exists():
            table = LatencyTable.load(path)
            if not table.missing(spec):
                return table
        config = ProfileConfig(models=(spec,), device="host", threads=threads, out=path, quick=True,
                               command=f"resolve_table('host', {model!r}, {threads}, {spec.resolution})")
        return profile(config, progress=progress)
    path = Path(device)
    if path.suffix == ".json" or path.exists():
        return _covering(LatencyTable.load(path), spec, str(path),
                         f"profile it: profile-latency --model {model} --resolution {spec.resolution} --out {path}")
    raise UsageError(
        f"unknown device {device!r}; accepted: {', '.join(SHIPPED)} (shipped modelled tables), host (measured "
        f"here, cached in {cache_dir()}), or a path to a table .json written by profile-latency"
    )
