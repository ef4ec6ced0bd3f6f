"""Run an offline FEFF batch where only numpy and feff10 are installed (no pymatgen, no Dask).

    PYTHONPATH=<repo> python3 -m sfn_stream.offline.corpus.batch_run batch.json.gz --workers 16 \\
        --out results.jsonl --time-limit 500

The same as ``sfn-stream dataset batch-run``; ``sfn-stream dataset batch-import`` brings the results
into the campaign. See :mod:`sfn_stream.offline.corpus._batch`.
"""

from __future__ import annotations

import argparse
import json
import sys

from sfn_stream.offline.batch_options import add_batch_run_arguments


def run(args: argparse.Namespace) -> dict:
    """Run the batch of parsed ``args``; the summary (also printed as one JSON line)."""
    from ._batch import run_batch

    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    summary = run_batch(args.batch, args.out, args.workers, args.time_limit, args.scratch)
    print(json.dumps(summary), flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfn_stream.offline.corpus.batch_run", description=__doc__.splitlines()[0])
    add_batch_run_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(args)
    except ValueError as err:  # BatchError included
        print(f"batch_run: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
