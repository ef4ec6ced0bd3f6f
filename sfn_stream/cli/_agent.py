"""``sfn-stream agent measure|list-samples``: the next-edge agent on the simulated beamline.

``agent measure`` measures a multi-metal corpus material end to end: PXRD, the first edge (yours with
``--first-edge``, else the agent's), then the agent's edges until it says done, every decision written to
Tiled as a run of its own (an embedded server in ``--tiled-dir`` or a temporary folder, or ``--tiled URI``).
``agent list-samples`` lists the corpus materials usable as samples, with their split.
"""

from __future__ import annotations

import os
import sys
import tempfile

from ._common import CliError, console, print_json


def add_parser(sub) -> None:
    parser = sub.add_parser("agent", help="the next-edge agent: measure a multi-metal sample edge by edge")
    which = parser.add_subparsers(dest="agent_command", required=True, metavar="ACTION")

    measure = which.add_parser("measure", help="PXRD, then the agent's edges until done, on the simulated beamline")
    measure.add_argument("--material", help="corpus material id (default: the first usable test-split material; "
                                            "see agent list-samples)")
    measure.add_argument("--first-edge", metavar="EL", help="the first edge to measure (default: the agent's choice)")
    where = measure.add_mutually_exclusive_group()
    where.add_argument("--tiled", metavar="URI", help="write to this Tiled server (API key: $SFN_TILED_API_KEY)")
    where.add_argument("--tiled-dir", metavar="DIR",
                       help="folder of an embedded Tiled server (default: a temporary one)")
    measure.add_argument("--sample-name", help="the runs' sfn.sample (default: the material id)")
    measure.add_argument("--target-confidence", type=float, help="done when every metal reaches it "
                                                                 "(default: the calibrated rule)")
    measure.add_argument("--min-bits-per-hour", type=float, help="an edge must promise this much (default: the "
                                                                 "calibrated rule)")
    measure.add_argument("--max-edges", type=int, help="stop after this many edges whatever the agent says")
    measure.add_argument("--structure-sources", metavar="LIST",
                         help="run structure inference when the agent is confident enough, from these template "
                              "sources (comma list of names: amcsd, aflow, robocrys, or CIF folders; an index is "
                              "built once per source: see docs/structure-inference.md)")
    measure.add_argument("--structure-confidence", type=float, default=0.7,
                         help="the oxidation-state confidence structure inference waits for (default 0.7)")
    measure.add_argument("--crystal-system-confidence", type=float, default=0.6,
                         help="the PXRD crystal-system probability structure inference waits for (default 0.6)")
    measure.add_argument("--no-pxrd", action="store_true", help="skip the PXRD run")
    measure.add_argument("--elements-only", action="store_true",
                         help="tell the plugin the sample's elements, not its formula (as at a beamline, and as "
                              "sfn-stream bench agent measures)")
    measure.add_argument("--seed", type=int, default=0, help="counting-noise seed of the simulated detectors")
    measure.add_argument("--json", action="store_true", help="print one JSON object (no progress display)")
    measure.set_defaults(run=run_measure)

    listing = which.add_parser("list-samples", help="multi-metal corpus materials usable as simulated samples")
    listing.add_argument("--split", choices=("train", "val", "test", "test_chemical_system"),
                         help="only this split (default: all)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=run_list)


# -- list-samples -------------------------------------------------------------------------------------
def usable_samples(split: str | None = None) -> list[dict]:
    """Multi-metal corpus materials with a FEFF10 spectrum at every 3d-metal edge, with their split."""
    from sfn_stream.offline.training import TrainingDataError, read_unified_splits
    from sfn_stream.simulated_beamline import multi_metal_materials

    try:
        splits = read_unified_splits()
        ids = multi_metal_materials()
    except (TrainingDataError, FileNotFoundError, ImportError, OSError) as err:
        raise CliError(f"the corpus or its splits cannot be read: {err}") from err
    splits_of: dict[str, list[str]] = {}
    for name, members in splits.items():  # test_chemical_system materials are also in test
        for material in members:
            splits_of.setdefault(material, []).append(name)
    formulas, metals = _formulas_and_metals(ids)
    rows = [{"material_id": m, "formula": formulas.get(m, ""), "metals": metals.get(m, []),
             "splits": splits_of.get(m, [])} for m in ids]
    return [r for r in rows if split is None or split in r["splits"]]


def _formulas_and_metals(ids) -> tuple[dict, dict]:
    import pandas as pd

    from sfn_stream.core import paths
    from sfn_stream.live.consumers.next_edge import METALS_3D

    table = pd.read_parquet(paths.CORPUS_DIR / "materials.parquet", columns=["material_id", "formula", "metals"])
    table = table[table.material_id.isin(set(ids))]
    order = METALS_3D.index
    return (dict(zip(table.material_id, table.formula)),
            {m: sorted(set(v), key=order) for m, v in zip(table.material_id, table.metals)})


def run_list(args) -> int:
    rows = usable_samples(args.split)
    if args.json:
        print_json(rows)
        return 0
    out = console()
    counts: dict[str, int] = {}
    for row in rows:
        for name in row["splits"] or ["none"]:
            counts[name] = counts.get(name, 0) + 1
        out.print(f"{row['material_id']:16s} {row['formula']:20s} {'+'.join(row['metals']):10s} "
                  f"{', '.join(row['splits']) or '-'}", highlight=False)
    out.print(f"{len(rows)} materials (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + "); what the "
              "agent concludes is a fair example only on test-split samples (the model never trained on them)",
              style="dim")
    return 0


# -- measure ------------------------------------------------------------------------------------------
def run_measure(args) -> int:
    from bluesky import RunEngine

    from sfn_stream.live.consumers import NextEdgeAgent, NextEdgeOptions
    from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer
    from sfn_stream.simulated_beamline import load_corpus_sample
    from sfn_stream.simulated_beamline.agent_session import (
        measure_with_agent,
        predicted_labels,
    )

    _check_numbers(args)
    material = args.material or _default_material()
    try:
        sample = load_corpus_sample(material)
    except KeyError as err:
        raise CliError(f"{err.args[0]} (sfn-stream agent list-samples lists the usable ones)") from err
    except (OSError, ImportError) as err:
        raise CliError(f"the corpus cannot be read: {err}") from err
    sample.elements_only = args.elements_only
    if len(sample.metals) < 2:
        raise CliError(f"{material} ({sample.formula}) has {len(sample.metals)} computed 3d-metal edge(s); the agent "
                       "needs a multi-metal sample (sfn-stream agent list-samples)")
    if args.first_edge and args.first_edge not in sample.metals:
        raise CliError(f"{material} ({sample.formula}) has no {args.first_edge} edge; its edges: "
                       f"{', '.join(sample.metals)}")
    options = NextEdgeOptions(target_confidence=args.target_confidence, min_bits_per_hour=args.min_bits_per_hour,
                              structure=_structure_options(args.structure_sources),
                              structure_confidence=args.structure_confidence,
                              crystal_system_confidence=args.crystal_system_confidence)
    tiled, client, where = _tiled(args)
    agent = NextEdgeAgent(options)
    plugin = SfnPlugin(make_tiled_writer(client), consumers=[agent])
    name = args.sample_name or material
    display = None if args.json else _Progress(sample, name, where, agent.options.describe(agent.agent.calibration))
    try:
        RE = RunEngine({}, call_returns_result=False)
        RE.subscribe(plugin)
        result = measure_with_agent(RE, plugin, agent, sample, first_edge=args.first_edge, name=name,
                                    pxrd=not args.no_pxrd, seed=args.seed, max_edges=args.max_edges,
                                    on_step=display.step if display else None)
        result.tiled_uri = where
        predicted = predicted_labels(agent, name)
    finally:
        if display is not None:
            display.close()
        plugin.close()
        if tiled is not None:
            tiled.close()
    right, total = result.labels_right(predicted)
    if args.json:
        print_json({**result.to_dict(), "predicted": predicted, "labels_right": right, "labels_total": total,
                    "stopping": agent.options.describe(agent.agent.calibration)})
    else:
        _print_result(result, predicted, right, total)
    return 0


def _check_numbers(args) -> None:
    if args.target_confidence is not None and not 0 < args.target_confidence <= 1.01:
        raise CliError("--target-confidence must be in (0, 1.01]")
    if args.min_bits_per_hour is not None and args.min_bits_per_hour < 0:
        raise CliError("--min-bits-per-hour must be >= 0")
    if args.max_edges is not None and args.max_edges < 1:
        raise CliError("--max-edges must be at least 1")


def _structure_options(sources: str | None):
    if not sources:
        return None
    from sfn_stream.live.plugin import StructureInferenceOptions

    return StructureInferenceOptions(sources=[s.strip() for s in sources.split(",") if s.strip()], automatic=False)


def _default_material() -> str:
    rows = usable_samples("test")
    if not rows:
        raise CliError("no multi-metal test-split material with every edge computed; give --material")
    return rows[0]["material_id"]


def _tiled(args):
    """(embedded service or None, client, where it writes)."""
    if args.tiled:
        from tiled.client import from_uri

        try:
            client = from_uri(args.tiled, api_key=os.environ.get("SFN_TILED_API_KEY"))
        except Exception as err:  # connection refused, bad URI, wrong key: all the user's to fix
            raise CliError(f"cannot reach Tiled at {args.tiled}: {err}") from err
        return None, client, args.tiled
    from sfn_stream.live.catalog import TiledService

    folder = args.tiled_dir or tempfile.mkdtemp(prefix="sfn-agent-")
    service = TiledService(folder)
    return service, service.client(), f"{service.uri} (data in {folder})"


class _Progress:
    """A bar of edges measured, with one line per decision above it."""

    def __init__(self, sample, name: str, where: str, rule: dict):
        from tqdm import tqdm

        told = "elements only: " + sample.composition if sample.elements_only else "formula given"
        print(f"{name}: {sample.formula} ({told}), edges {', '.join(sample.metals)}; Tiled {where}", file=sys.stderr)
        print(f"stopping rule ({rule['stopping_from']}): target confidence {rule['target_confidence']:g}, "
              f"min {rule['min_bits_per_hour']:g} bits/h", file=sys.stderr)
        self.n_metals = len(sample.metals)
        self.bar = tqdm(total=self.n_metals, desc="edges measured", unit="edge", file=sys.stderr)

    def step(self, step) -> None:
        from sfn_stream.simulated_beamline.agent_session import format_step

        self.bar.n = len(step.edges_measured)
        self.bar.set_postfix(confidence=f"{step.confidence:.2f}", refresh=False)
        self.bar.write(format_step(step, self.n_metals), file=sys.stderr)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _print_result(result, predicted, right: int, total: int) -> None:
    out = console()
    final = result.final
    if final is None:
        out.print("no decision came back from the agent", style="red")
        return
    out.print(f"[bold]{result.sample}[/bold]: {len(final.edges_measured)} of {len(result.metals)} edges measured "
              f"({', '.join(final.edges_measured) or '-'}), confidence {final.confidence:.2f}; {final.reason}")
    truth = result.truth.get("metals", {})
    for metal in result.metals:
        p, t = predicted.get(metal, {}), truth.get(metal, {})
        out.print(f"  {metal}: oxidation state {p.get('oxidation_state')} (label {t.get('oxidation_state')}), "
                  f"CN {p.get('coordination_number')} (label {t.get('coordination_number')})")
    if total:
        out.print(f"  {right}/{total} labels right (one sample: an example, not a score; "
                  "sfn-stream bench agent measures)")
    edges = [s for s in result.steps if s.trigger != "pxrd" and s.stop_to_suggestion_ms is not None]
    if edges:
        ready = [s.stop_to_suggestion_ms for s in edges]
        written = [s.stop_to_decision_run_ms for s in edges]
        own = [s.decision_ms for s in edges]
        out.print(f"  {len(result.steps)} decision runs in Tiled; after each edge's stop the suggestion was ready in "
                  f"{min(ready):.0f}-{max(ready):.0f} ms (its run written in {min(written):.0f}-{max(written):.0f} ms; "
                  f"the agent's own share {min(own):.0f}-{max(own):.0f} ms)")
    structure = next((s.structure_run for s in reversed(result.steps) if s.structure_run), None)
    if structure:
        out.print(f"  structure inference: run {structure} in Tiled (stop.sfn.top_formula)")
    out.print(f"  Tiled: {result.tiled_uri}; query: Key('start.sfn.kind') == 'next_edge', "
              f"Key('start.sfn.sample') == {result.sample!r}", style="dim")
