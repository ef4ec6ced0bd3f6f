"""``sfn-stream status`` (what the spool still holds) and ``sfn-stream deliver`` (drain it to Tiled now)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ._common import CliError, console, print_json


def add_parser(sub) -> None:
    status = sub.add_parser("status", help="documents not yet delivered to Tiled: pending runs, oldest age, "
                                           "last error, per spool session")
    status.add_argument("--spool", type=Path, help="spool folder (default $SFN_SPOOL_DIR or "
                                                   "~/.local/share/sfn-stream/spool)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=run_status)
    deliver = sub.add_parser("deliver", help="deliver what ended sessions left in the spool (analysing what was "
                                             "not analysed), then exit")
    deliver.add_argument("--tiled", required=True, help="Tiled URI, e.g. http://localhost:8000/api/v1")
    deliver.add_argument("--api-key", default=os.environ.get("SFN_TILED_API_KEY"))
    deliver.add_argument("--spool", type=Path)
    deliver.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds (default 1 h)")
    deliver.set_defaults(run=run_deliver)


def run_status(args) -> int:
    from sfn_stream.live.delivery import spool_status

    report = spool_status(args.spool)
    if args.json:
        print_json(report)
        return 0
    out = console()
    out.print(f"spool {report['spool']}: {report['pending_runs']} run(s), {report['pending_documents']} document(s) "
              "not yet delivered" + (f"; oldest {report['oldest_pending_age_s']:.0f} s"
                                     if report["oldest_pending_age_s"] is not None else ""))
    for session in report["sessions"]:
        owner = "live process" if session["owner_alive"] else "ended: the next plugin or `sfn-stream deliver` sends it"
        out.print(f"  {session['session']}  {session['pending_runs']} run(s), {session['pending_documents']} doc(s)"
                  f"  [{owner}]" + (f"\n    last error {session['last_error_age_s']:.0f} s ago: {session['last_error']}"
                                   if session["last_error"] else ""))
    return 0


def run_deliver(args) -> int:
    from sfn_stream.live.delivery import spool_status
    from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer

    from ._backfill import connect

    client = connect(args.tiled, args.api_key)
    plugin = SfnPlugin(make_tiled_writer(client), spool=args.spool, exit_drain_seconds=0)
    out = console()
    started = time.monotonic()
    with out.status("delivering") as status:
        while not plugin.flush(timeout=1):
            state = plugin.delivery()
            status.update(f"delivering: {state.pending_runs} run(s), {state.pending_documents} document(s) left"
                          + (f"; last error: {state.last_error}" if state.last_error else ""))
            if time.monotonic() - started > args.timeout:
                plugin.close(timeout=5)
                raise CliError(f"not delivered after {args.timeout:.0f} s; the documents stay in the spool")
    delivered = plugin.delivery().delivered_runs
    plugin.close()
    left = spool_status(args.spool)
    out.print(f"delivered {delivered} run(s); {left['pending_runs']} run(s) still in the spool "
              "(sessions of live processes are theirs to deliver)")
    return 0
