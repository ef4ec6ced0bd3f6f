"""``sfn-stream backfill``: add sfn-stream's derived stream and ``stop.sfn`` summary to runs already in Tiled;
``sfn-stream bench backfill``: its benchmark (:mod:`sfn_stream.offline.evaluation.backfill_benchmark`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime

from ._common import CliError, console, print_json

EXIT_FAILED_RUNS = 1
PROBE_TIMEOUT = 10.0  # seconds to find out whether the server answers at all
CLIENT_TIMEOUT = 120.0  # seconds per request once it does


def add_parser(sub) -> None:
    parser = sub.add_parser("backfill", help="analyse runs already stored in Tiled; add the derived stream and "
                                             "stop.sfn to each, in place (idempotent)")
    parser.add_argument("--tiled", required=True, metavar="URI", help="the Tiled server, e.g. http://host:8000/api/v1")
    parser.add_argument("--api-key", metavar="KEY", default=os.environ.get("SFN_TILED_API_KEY"),
                        help="the server's API key (default: $SFN_TILED_API_KEY)")
    parser.add_argument("--uid", action="append", default=[], metavar="UID", help="a run's uid (repeatable)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="start metadata equal to VALUE, e.g. sfn.sample=S-042 or plan_name=xanes_scan "
                             "(a KEY beginning stop. searches the stop; VALUE is read as JSON when it parses: "
                             "3, true, \"3\"); repeatable, all must hold")
    parser.add_argument("--since", metavar="ISO", help="runs started at or after this time (2026-12-01T08:00)")
    parser.add_argument("--until", metavar="ISO", help="runs started before this time")
    parser.add_argument("--force", action="store_true",
                        help="analyse again runs that already have stop.sfn (their derived stream is replaced)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=run_backfill)


def add_bench_parser(which) -> None:
    """``bench backfill``: the benchmark parses its own options (--runs, --json)."""
    bench = which.add_parser("backfill", help="write N stored XANES runs, backfill them twice (runs/s, spectra/s)",
                             add_help=False)
    bench.add_argument("argv", nargs=argparse.REMAINDER, help="the benchmark's own options (--help lists them)")
    bench.set_defaults(run=run_bench, bench_name="backfill")


def run_bench(args) -> int:
    from sfn_stream.offline.evaluation.backfill_benchmark import main

    return main(args.argv)


def run_backfill(args) -> int:
    from sfn_stream.live.backfill import BackfillError, backfill

    where = dict(_criterion(text) for text in args.where)
    since, until = _moment(args.since, "--since"), _moment(args.until, "--until")
    client = connect(args.tiled, args.api_key)
    try:
        report = backfill(client, uids=args.uid, where=where, since=since, until=until, force=args.force,
                          progress=not args.json or sys.stderr.isatty())  # the bar goes to stderr
    except BackfillError as err:
        raise CliError(str(err)) from None
    result = report.to_dict()
    if args.json:
        print_json(result)
    else:
        _print(console(), result)
    return EXIT_FAILED_RUNS if result["failed"] else 0


def connect(uri: str, api_key: str | None):
    """A Tiled client, or a one-line CliError when the server does not answer or refuses the key."""
    import httpx
    from tiled.client import from_uri

    if api_key is not None and not (api_key.isascii() and api_key.isalnum()):
        raise CliError("the API key must be ASCII letters and digits (as Tiled requires)")
    try:  # fail fast: the Tiled client itself retries an unreachable server for about a minute
        httpx.get(uri, timeout=PROBE_TIMEOUT, trust_env=False)
    except httpx.HTTPError as err:
        raise CliError(f"cannot reach the Tiled server at {uri}: {err or type(err).__name__}") from None
    try:
        return from_uri(uri, api_key=api_key, timeout=httpx.Timeout(CLIENT_TIMEOUT))
    except httpx.HTTPStatusError as err:
        raise CliError(f"the Tiled server at {uri} answered {err.response.status_code}: "
                       f"{err.response.reason_phrase} (check the URI and --api-key)") from None
    except (httpx.HTTPError, ValueError) as err:
        raise CliError(f"cannot connect to the Tiled server at {uri}: {err}") from None


def _criterion(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise CliError(f"--where takes KEY=VALUE, not {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _moment(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{option} takes an ISO date or time (2026-12-01 or 2026-12-01T08:00), not {text!r}") from None


def _print(out, r: dict) -> None:
    out.print(f"[bold]backfill[/bold]: {r['runs']} runs: {r['written']} written, {r['unchanged']} unchanged, "
              f"{r['skipped']} skipped, {r['failed']} failed in {r['seconds']:.1f} s "
              f"({r['runs_per_second']:.2f} runs/s, {r['spectra']} spectra, {r['spectra_per_second']:.2f} spectra/s)")
    for reason, count in r["reasons"].items():
        out.print(f"  {count} x {reason}")
