"""``sfn-stream bench backfill``: backfill N stored XANES runs, then backfill them again.

The runs are written to an embedded Tiled server by TiledWriter alone (no plugin): one 200-point
XANES scan of the demo sample is measured on the simulated beamline, and each stored run is a fresh
copy of it with new uids and its own Poisson counting noise (drawing counts is what the simulated
detector does; the RunEngine would add minutes and measure nothing of the backfill). Then:
- backfill every run: runs, seconds, runs/s, spectra/s (derived rows written per second);
- check that every run has its derived stream and ``stop.sfn`` (complete);
- backfill again: no run may be written, and every run's stop, notes and derived stream must be
  what the first pass left (unchanged on second pass).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
import uuid
from typing import Any, Callable

import numpy as np

COUNT_KEYS = ("xas_i0", "xas_it", "xas_iref")


def template_run(seed: int = 11) -> list[tuple[str, dict]]:
    """The documents of one 200-point XANES scan of the demo sample on the simulated beamline."""
    from bluesky import RunEngine

    from sfn_stream.simulated_beamline import load_demo_sample, simulated_beamline, xanes_scan

    mono, xas, _ = simulated_beamline(load_demo_sample(), seed=seed)
    docs: list[tuple[str, dict]] = []
    RE = RunEngine({}, call_returns_result=False)
    RE.subscribe(lambda name, doc: docs.append((name, copy.deepcopy(doc))))
    RE(xanes_scan(xas, mono, "Cu", composition="Sr3CuPtO6", sample="bench-backfill"))
    return docs


def noisy_copy(template: list[tuple[str, dict]], rng: np.random.Generator, index: int) -> list[tuple[str, dict]]:
    """The template run with new uids, new times and fresh Poisson draws of every ion-chamber count."""
    run_uid, shift = str(uuid.uuid4()), time.time() - template[0][1]["time"]
    descriptors: dict[str, str] = {}
    out = []
    for name, doc in template:
        doc = copy.deepcopy(doc)
        doc["time"] = doc["time"] + shift
        if name == "start":
            doc["uid"] = run_uid
            doc["sfn"]["sample"] = f"bench-backfill-{index}"
        else:
            doc["uid"] = descriptors.setdefault(doc["uid"], str(uuid.uuid4())) if name == "descriptor" \
                else str(uuid.uuid4())
        if "run_start" in doc:
            doc["run_start"] = run_uid
        if name == "event":
            doc["descriptor"] = descriptors[doc["descriptor"]]
            for key in COUNT_KEYS:
                if key in doc["data"]:
                    doc["data"][key] = float(rng.poisson(max(doc["data"][key], 0.0)))
        out.append((name, doc))
    return out


def write_stored_runs(client, count: int, *, seed: int = 0, progress: bool = True) -> list[str]:
    """Write ``count`` XANES runs with TiledWriter alone (no derived stream, no summary); their uids."""
    from tqdm import tqdm

    template = template_run()
    return [_store(client, noisy_copy(template, np.random.default_rng([seed, index]), index))
            for index in tqdm(range(count), desc="writing stored runs", unit="run", disable=not progress)]


def _store(client, docs: list[tuple[str, dict]]) -> str:
    """One run through its own TiledWriter, its events as one page (TiledWriter writes them in one append)."""
    from event_model import pack_event_page

    from sfn_stream.live.plugin import make_tiled_writer

    writer = make_tiled_writer(client)
    events = [doc for name, doc in docs if name == "event"]
    for name, doc in docs:
        if name != "event":
            writer(name, doc)
        elif doc is events[-1]:
            writer("event_page", pack_event_page(*events))
    return docs[0][1]["uid"]


def snapshot(client, uids, stream: str) -> dict[str, Any]:
    """What a backfill may change in each run: its stop, its notes, its streams and the derived stream's
    descriptor uid and rows (None for a run without the derived stream)."""
    state = {}
    for uid in uids:
        run = client[uid]
        streams = sorted(run.base)  # the plain container: a missing key costs one lookup, not four
        derived = run[stream] if stream in streams else None
        state[uid] = (run.metadata.get("stop"), run.metadata.get("notes"), streams,
                      None if derived is None else (derived.metadata["uid"], derived.read().sizes.get("time")))
    return state


def measure_backfill(runs: int, *, status: Callable[[str], None] | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Write ``runs`` stored runs, backfill them twice; the figures as a dict."""
    from sfn_stream.live.backfill import backfill
    from sfn_stream.live.catalog import TiledService
    from sfn_stream.live.plugin import XANES_STREAM

    status = status or (lambda line: None)
    with tempfile.TemporaryDirectory() as tmp:
        service = TiledService(tmp)
        try:
            client = service.client()
            started = time.perf_counter()
            uids = write_stored_runs(client, runs, progress=progress)
            write_seconds = time.perf_counter() - started
            status("first backfill")
            first = backfill(client, progress=progress)
            after_first = snapshot(client, uids, XANES_STREAM)
            complete = sum(1 for stop, _, streams, derived in after_first.values()
                           if derived is not None and derived[1] == 1 and "sfn" in (stop or {}))
            status("second backfill")
            second = backfill(client, progress=progress)
            unchanged = sum(1 for uid, state in snapshot(client, uids, XANES_STREAM).items()
                            if state == after_first[uid])
        finally:
            service.close()
    return {
        "runs": runs,
        "write_seconds": round(write_seconds, 2),
        "first_pass": {k: v for k, v in first.to_dict().items() if k != "outcomes"},
        "complete": complete,
        "second_pass": {**second.counts, "seconds": round(second.seconds, 2)},
        "unchanged_on_second_pass": unchanged,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }


def main(argv=None) -> int:
    from rich.console import Console

    parser = argparse.ArgumentParser(prog="sfn-stream bench backfill",
                                     description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--runs", type=int, default=100, help="stored XANES runs to write and backfill (default 100)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    result = measure_backfill(args.runs, progress=not args.json or sys.stderr.isatty())  # bars on stderr
    if args.json:
        import json

        print(json.dumps(result, indent=2))
    else:
        _print(Console(), result)
    ok = result["complete"] == args.runs and result["unchanged_on_second_pass"] == args.runs
    return 0 if ok else 1


def _print(out, r) -> None:
    first, second = r["first_pass"], r["second_pass"]
    out.print(f"[bold]sfn-stream bench backfill[/bold]: {r['runs']} stored XANES runs (written by TiledWriter alone "
              f"in {r['write_seconds']:.1f} s), {r['cpus']} CPUs")
    out.print(f"first pass: {first['written']} written, {first['skipped']} skipped, {first['failed']} failed in "
              f"{first['seconds']:.1f} s: {first['runs_per_second']:.2f} runs/s, "
              f"{first['spectra_per_second']:.2f} spectra/s (analysis {first['analysis_seconds']:.1f} s)")
    out.print(f"complete (derived stream + stop.sfn): {r['complete']} / {r['runs']}")
    out.print(f"second pass: {second['written']} written, {second['unchanged']} unchanged in "
              f"{second['seconds']:.1f} s; runs unchanged: {r['unchanged_on_second_pass']} / {r['runs']}")
