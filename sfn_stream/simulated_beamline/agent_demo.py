"""Measure a multi-metal corpus material end to end on the simulated beamline with the next-edge agent.

    python -m sfn_stream.simulated_beamline.agent_demo [--material amcsd-00018] [--first-edge Fe] [--tiled-dir DIR]

An embedded Tiled server, the plugin with the agent as an after-stop consumer, a PXRD run, then the edges
the agent chooses (through bluesky-adaptive's ``optimize``) until it says done: one progress line per
edge, then each decision run read back from Tiled beside the material's true labels.
"""

from __future__ import annotations

import argparse
import sys
import tempfile


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfn_stream.simulated_beamline.agent_demo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--material", help="corpus material id (default: the first multi-metal one)")
    parser.add_argument("--first-edge", help="the first edge to measure (default: the agent's choice)")
    parser.add_argument("--tiled-dir", help="folder of the embedded Tiled server (default: a temporary one)")
    parser.add_argument("--min-bits-per-hour", type=float, default=None)
    parser.add_argument("--target-confidence", type=float, default=None)
    args = parser.parse_args(argv)

    from bluesky import RunEngine
    from tiled.queries import Key

    from sfn_stream.live.catalog import TiledService
    from sfn_stream.live.consumers import NextEdgeAgent, NextEdgeOptions
    from sfn_stream.live.consumers.next_edge import NEXT_EDGE_KIND
    from sfn_stream.live.consumers.next_edge_optimizer import NextEdgeOptimizer
    from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer
    from sfn_stream.simulated_beamline import (
        corpus_beamline,
        load_corpus_sample,
        measure_sample,
        multi_metal_materials,
    )

    try:
        material = args.material or multi_metal_materials()[0]
        sample = load_corpus_sample(material)
    except (KeyError, IndexError, OSError, ImportError) as err:
        print(f"sfn-stream: no corpus sample to measure: {err}", file=sys.stderr)
        return 2
    if args.first_edge and args.first_edge not in sample.metals:
        print(f"sfn-stream: {material} has no {args.first_edge} edge (its edges: {', '.join(sample.metals)})",
              file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("min_bits_per_hour", args.min_bits_per_hour),
                                   ("target_confidence", args.target_confidence)) if v is not None}
    service = TiledService(args.tiled_dir or tempfile.mkdtemp(prefix="sfn-agent-demo-"))
    client = service.client()
    agent = NextEdgeAgent(NextEdgeOptions(**overrides))
    plugin = SfnPlugin(make_tiled_writer(client), consumers=[agent])
    try:
        RE = RunEngine({}, call_returns_result=False)
        RE.subscribe(plugin)
        mono, xas, powder = corpus_beamline(sample)
        print(f"{material} {sample.formula}: edges {', '.join(sample.metals)}; measuring")
        optimizer = NextEdgeOptimizer(agent, sample=material, composition=sample.formula, first_edge=args.first_edge,
                                      wait=plugin.flush)
        RE(measure_sample(sample, mono, xas, powder, optimizer))
        plugin.flush(120)
        found = client.search(Key("start.sfn.kind") == NEXT_EDGE_KIND).search(Key("start.sfn.sample") == material)
        for run in sorted(found.values(), key=lambda r: r.metadata["start"]["time"]):
            stop = run.metadata["stop"]["sfn"]
            print(f"  decision {run.metadata['start']['uid'][:8]}: measured {stop['edges_measured']}, "
                  f"next {stop['next_edge'] or '-'}, done {stop['done']}, confidence {stop['confidence']:.2f}, "
                  f"species {stop['species']}, decided in {stop['decision_ms']:.0f} ms")
        truth = ", ".join(f"{m}{t['oxidation_state']}+ CN {t['coordination_number']}"
                          for m, t in sample.truth["metals"].items())
        print(f"  true labels: {truth}; {sample.truth['crystal_system']}")
    finally:
        plugin.close()
        service.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
