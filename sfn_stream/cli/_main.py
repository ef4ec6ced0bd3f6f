"""``sfn-stream``: demo, serve, predict, bench, train."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ._common import EXIT_USAGE, CliError

DESCRIPTION = ("live XANES and PXRD predictions for Bluesky beamlines, written back into each run in Tiled; "
               "the corpus, training and evaluation behind them")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sfn-stream", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and warnings")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from . import (
        _agent,
        _backfill,
        _bench,
        _dataset,
        _delivery,
        _demo,
        _explain,
        _predict,
        _serve,
        _structure,
        _train,
    )

    for module in (_demo, _serve, _predict, _explain, _bench, _train, _dataset, _structure, _backfill, _delivery,
                   _agent):
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "bench_name", None):  # a benchmark module parses its own options
        args.argv = [*extra, *args.argv]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except CliError as err:
        print(f"sfn-stream: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt:
        print("sfn-stream: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`... --json | head`): stop quietly, as Unix tools do
        _silence_stdout()
        return 141
    except (ValueError, FileNotFoundError) as err:  # bad input that reached a library call
        print(f"sfn-stream: {err}", file=sys.stderr)
        return EXIT_USAGE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not fail on the closed pipe again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        pass
