"""Measure a multi-metal corpus material end to end on the simulated beamline with the next-edge agent.

    python -m sfn_stream.simulated_beamline.agent_demo [--material amcsd-00018] [--first-edge Fe] [--tiled-dir DIR]

The same as ``sfn-stream agent measure`` (which adds ``--tiled URI``, ``--json`` and a progress bar): an
embedded Tiled server, the plugin with the agent as an after-stop consumer, a PXRD run, then the edges the
agent chooses until it says done, one line per decision (:func:`agent_session.measure_with_agent`).
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

    from sfn_stream.live.catalog import TiledService
    from sfn_stream.live.consumers import NextEdgeAgent, NextEdgeOptions
    from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer

    from . import load_corpus_sample, multi_metal_materials
    from .agent_session import format_step, measure_with_agent

    try:
        sample = load_corpus_sample(args.material or multi_metal_materials()[0])
    except (KeyError, IndexError, OSError, ImportError) as err:
        print(f"sfn-stream: no corpus sample to measure: {err}", file=sys.stderr)
        return 2
    if args.first_edge and args.first_edge not in sample.metals:
        print(f"sfn-stream: {sample.material_id} has no {args.first_edge} edge (its edges: {', '.join(sample.metals)})",
              file=sys.stderr)
        return 2
    service = TiledService(args.tiled_dir or tempfile.mkdtemp(prefix="sfn-agent-demo-"))
    agent = NextEdgeAgent(NextEdgeOptions(min_bits_per_hour=args.min_bits_per_hour,
                                          target_confidence=args.target_confidence))
    plugin = SfnPlugin(make_tiled_writer(service.client()), consumers=[agent])
    try:
        RE = RunEngine({}, call_returns_result=False)
        RE.subscribe(plugin)
        print(f"{sample.material_id} {sample.formula}: edges {', '.join(sample.metals)}; Tiled {service.uri}")
        result = measure_with_agent(RE, plugin, agent, sample, first_edge=args.first_edge,
                                    on_step=lambda step: print("  " + format_step(step, len(sample.metals))))
        truth = ", ".join(f"{m}{t['oxidation_state']}+ CN {t['coordination_number']}"
                          for m, t in sample.truth["metals"].items())
        print(f"  measured {', '.join(result.edges_measured)}; true labels: {truth}; {sample.truth['crystal_system']}")
    finally:
        plugin.close()
        service.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
