"""`jcw space`: a model's search space: layers, coupling groups, genes, MACs/params, latency range."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import numpy as np

from jcw.core.netspec import shipped_models
from jcw.core.space import BOUNDS_PRESETS, MODES, SearchSpace
from jcw.core.util import default_threads


def space_report(space: SearchSpace) -> dict:
    """JSON-able summary: layers, coupling groups, genes with bounds, full and minimal MACs/params."""
    spec = space.spec
    nc = space.n_channel_genes
    full, minimal = space.full(), space.minimal()
    macs, params = space.macs(full), space.params(full)
    layers = [{"name": x.name, "kind": x.kind, "kernel": x.kernel, "stride": x.stride, "padding": x.padding,
               "groups": x.groups, "in_res": x.in_res, "in_ch": x.in_ch, "out_ch": x.out_ch, "group": x.group,
               "in_group": x.in_group, "in_parts": [list(p) for p in x.in_parts]} for x in spec.layers]
    channel_genes = [{"gene": j, "group": g.id, "channels": g.channels, "lower": float(space.lower[j]),
                      "upper": float(space.upper[j]), "residual": g.residual, "strided": g.strided,
                      "members": list(g.members)} for j, g in enumerate(spec.groups[i] for i in space.channel_groups)]
    frozen = [{"group": g.id, "channels": g.channels, "members": list(g.members), "reason": g.frozen}
              for g in spec.groups if g.frozen]
    density_genes = [{"gene": nc + j, "layer": spec.layers[i].name, "kind": spec.layers[i].kind,
                      "lower": float(space.lower[nc + j]), "upper": float(space.upper[nc + j])}
                     for j, i in enumerate(space.density_layers)]
    return {"model": spec.model, "resolution": spec.resolution, "num_classes": spec.num_classes,
            "mode": space.mode, "grid": space.grid.tolist(), "params": int(params[0]), "macs": int(macs[0]),
            "minimal_params": int(space.params(minimal)[0]), "minimal_macs": int(space.macs(minimal)[0]),
            "channel_genes": channel_genes, "density_genes": density_genes, "frozen_groups": frozen,
            "layers": layers}


def format_report(report: dict) -> str:
    """Human-readable tables of ``space_report``."""
    lines = [f"{report['model']} at {report['resolution']}x{report['resolution']}, {report['num_classes']} classes, "
             f"mode {report['mode']}",
             f"full: {report['macs'] / 1e6:.1f}M MACs, {report['params'] / 1e6:.3f}M params; "
             f"all genes at lower bounds: {report['minimal_macs'] / 1e6:.1f}M MACs, "
             f"{report['minimal_params'] / 1e6:.3f}M params", "",
             f"{'layer':<28} {'kind':<9} {'k':>2} {'s':>2} {'in_res':>6} {'in_ch':>6} {'out_ch':>6} {'group':>5}"]
    for x in report["layers"]:
        lines.append(f"{x['name']:<28} {x['kind']:<9} {x['kernel']:>2} {x['stride']:>2} {x['in_res']:>6} "
                     f"{x['in_ch']:>6} {x['out_ch']:>6} {x['group']:>5}")
    lines += ["", f"channel genes ({len(report['channel_genes'])}): one ratio per coupling group",
              f"{'gene':>4} {'group':>5} {'ch':>5} {'lower':>5}  flags     members"]
    for g in report["channel_genes"]:
        flags = ",".join(f for f, on in (("res", g["residual"]), ("stride", g["strided"])) if on) or "-"
        lines.append(f"{g['gene']:>4} {g['group']:>5} {g['channels']:>5} {g['lower']:>5.2f}  {flags:<9} "
                     f"{' '.join(g['members'])}")
    lines += ["", f"density genes ({len(report['density_genes'])}): kept fraction of 4x1 blocks per conv",
              f"{'gene':>4} {'lower':>5}  layer"]
    for d in report["density_genes"]:
        lines.append(f"{d['gene']:>4} {d['lower']:>5.2f}  {d['layer']} ({d['kind']})")
    lines += ["", f"frozen groups ({len(report['frozen_groups'])}): kept at full width, no gene"]
    for g in report["frozen_groups"]:
        lines.append(f"{'':>4} {g['group']:>5} {g['channels']:>5}  {' '.join(g['members'])}: {g['reason']}")
    return "\n".join(lines)


@dataclass
class SpaceCLIConfig:
    """What ``python -m jcw.space`` prints."""

    model: str
    resolution: int | None = None
    mode: str = "joint"
    as_json: bool = False
    device: str | None = None
    threads: int | None = None
    bounds: str = "default"


def latency_range(space: SearchSpace, device: str, threads: int) -> tuple[float, float]:
    """Predicted ms of the fastest arch of ``space`` (every gene at its lower bound) and of the unpruned model."""
    from latency.devices import resolve_table
    from latency.predictor import predictor_for

    table = resolve_table(device, space.spec.model, threads, space.spec.resolution, spec=space.spec, progress=False)
    out_ch, in_ch, density = space.decode_arrays(np.stack([space.minimal(), space.full()]))
    fastest, full = predictor_for(table, space.spec).predict(out_ch, in_ch, density)
    return float(fastest), float(full)


def model_space(model: str, resolution: int | None, mode: str, bounds: str) -> SearchSpace:
    """The space of a zoo model (its shipped spec: no torch needed) or of a model reference
    (path/to/file.py:factory, package.module:factory: built with the factory's default class count,
    described at ``resolution`` or 224)."""
    if model in shipped_models():
        return SearchSpace.for_model(model, resolution, mode=mode, bounds=BOUNDS_PRESETS[bounds])
    try:
        from jcw.layers import describe_model
        from jcw.models import deploy_resolution, load_model, model_name
    except ImportError as e:
        raise ValueError(f"unknown model {model!r}; known models: {', '.join(shipped_models())}; a model of your "
                         f"own needs torch ({e})") from None
    net = load_model(model)
    spec = describe_model(net, deploy_resolution(net, resolution), model_name(net))
    return SearchSpace(spec, mode=mode, bounds=BOUNDS_PRESETS[bounds])


def run_cli(config: SpaceCLIConfig) -> str:
    """The text ``python -m jcw.space`` prints for ``config``."""
    space = model_space(config.model, config.resolution, config.mode, config.bounds)
    report = space_report(space)
    report["bounds"] = config.bounds
    if config.device is not None:
        threads = config.threads or default_threads(config.device)
        fastest, full = latency_range(space, config.device, threads)
        report.update(device=config.device, threads=threads, latency_min_ms=fastest, latency_full_ms=full)
    if config.as_json:
        return json.dumps(report)
    text = format_report(report)
    if config.device is not None:
        text += (f"\n\nlatency on {report['device']} ({report['threads']} thread(s)): fastest arch "
                 f"{report['latency_min_ms']:.2f} ms, unpruned {report['latency_full_ms']:.2f} ms "
                 f"({report['latency_min_ms'] / report['latency_full_ms']:.1%})")
    return text


def main(argv: list[str] | None = None) -> int:
    """CLI: print a model's search space (layer table, coupling groups, genes, MACs/params, and with
    --device the predicted latency of its fastest arch and of the unpruned model)."""
    parser = argparse.ArgumentParser(prog="jcw space", description=main.__doc__)
    parser.add_argument("--model", required=True, metavar="REF",
                        help=f"zoo model ({', '.join(shipped_models())}), or your own: path/to/file.py:factory or "
                             "package.module:factory (built with the factory's default num_classes)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="input size (default: the zoo model's; 224 for a model outside the zoo)")
    parser.add_argument("--mode", choices=MODES, default="joint", help="which genes are free (default joint)")
    parser.add_argument("--bounds", choices=list(BOUNDS_PRESETS), default="default", help="lower-bound preset")
    parser.add_argument("--device", help="a53 | a72 | host | a table path: add the fastest and unpruned latency")
    parser.add_argument("--threads", type=int, help="which table of the device (default 4 on a53/a72, 1 on host)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    try:
        text = run_cli(SpaceCLIConfig(args.model, args.resolution, args.mode, args.json, args.device, args.threads,
                                      args.bounds))
    except ValueError as e:
        parser.error(str(e))
    print(text)
    return 0

