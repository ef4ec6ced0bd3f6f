#!/usr/bin/env python
"""Deployable sfn-stream callback service (runs outside the RunEngine process).

    bluesky-0MQ-proxy 5577 5578
    SFN_TILED_API_KEY=secret python callbacks/sfn_service.py --zmq localhost:5578 \
        --tiled http://localhost:8000/api/v1

Receives every document from bluesky's 0MQ proxy, adds sfn-stream's derived streams and
stop summaries, and writes the runs to Tiled with bluesky-tiled-plugins' TiledWriter. With ``--agent``
the next-edge agent runs here too, as an after-stop consumer: after every XANES / PXRD run of a sample
(``sfn.sample``, ``sfn.composition``) it writes a decision run (which edge next, or done) to the same Tiled.
"""

import argparse
import logging
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zmq", default=os.environ.get("SFN_ZMQ", "localhost:5578"),
                        help="the 0MQ proxy's outbound address (default: $SFN_ZMQ or localhost:5578)")
    parser.add_argument("--tiled", default=os.environ.get("SFN_TILED_URI", "http://localhost:8000/api/v1"),
                        help="Tiled server URI (default: $SFN_TILED_URI)")
    parser.add_argument("--api-key", default=os.environ.get("SFN_TILED_API_KEY"),
                        help="Tiled API key (default: $SFN_TILED_API_KEY)")
    parser.add_argument("--prefix", default="", help="0MQ topic prefix to listen to (default: all)")
    parser.add_argument("--agent", action="store_true",
                        help="run the next-edge agent beside the plugin; its decision runs go to the same Tiled")
    parser.add_argument("--agent-target-confidence", type=float, default=None,
                        help="the agent's confidence target (default: its calibrated stopping rule)")
    parser.add_argument("--agent-min-bits-per-hour", type=float, default=None,
                        help="the least expected gain an edge must promise (default: the calibrated rule)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from sfn_stream.live.plugin import run_service

    consumers = []
    if args.agent:
        from sfn_stream.live.consumers import NextEdgeAgent, NextEdgeOptions

        consumers.append(NextEdgeAgent(NextEdgeOptions(target_confidence=args.agent_target_confidence,
                                                       min_bits_per_hour=args.agent_min_bits_per_hour)))

    def ready():
        agent = " (with the next-edge agent)" if consumers else ""
        print(f"sfn-stream service ready{agent}: {args.zmq} -> {args.tiled}", flush=True)

    run_service(args.zmq, args.tiled, args.api_key, prefix=args.prefix.encode(), ready=ready, consumers=consumers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
