"""``sfn-stream bench stream``: what the plugin costs a live beamline, measured in one run.

Interleaves 200-point XANES scans on the simulated beamline written by TiledWriter alone
and by the plugin + TiledWriter (same server, same writer settings) and prints:
- latency from the XANES stop document to the derived stream being written (stop handled
  by the writer, derived stream included): p50, p99;
- per-event overhead: seconds the plugin takes on the RunEngine's thread per document, and
  the wall-time difference per point;
- wall time of a scan (RunEngine plus everything written) for both, and their ratio; and the
  acquisition ratio (the RunEngine's own time, which is what the plugin must not stall);
- for scale: how long TiledWriter alone spends on a stop document (the raw run's own flush).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import numpy as np

from ._common import CliError, console, print_json


def add_parser(sub) -> None:
    parser = sub.add_parser("bench", help="benchmarks that print figures")
    which = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    stream = which.add_parser("stream", help="plugin latency and overhead on a live 200-point XANES scan")
    stream.add_argument("--scans", type=int, default=20, help="scans per configuration (default 20)")
    stream.add_argument("--json", action="store_true")
    stream.set_defaults(run=run_stream)
    from sfn_stream.offline.evaluation import BENCHMARKS

    for name, (_, help_text) in BENCHMARKS.items():
        other = which.add_parser(name, help=help_text, add_help=False)
        other.add_argument("argv", nargs=argparse.REMAINDER, help="the benchmark's own options (--help lists them)")
        other.set_defaults(run=run_module, bench_name=name)


def run_module(args) -> int:
    """Hand the rest of the command line to the benchmark module's own parser."""
    import importlib

    from sfn_stream.offline.evaluation import BENCHMARKS

    module = importlib.import_module(f"sfn_stream.offline.evaluation.{BENCHMARKS[args.bench_name][0]}")
    return module.main(args.argv)


class _StopTimer:
    """A callback wrapper that records how long the wrapped writer takes on each stop document."""

    def __init__(self, callback):
        self.callback, self.stop_seconds = callback, []

    def __call__(self, name, doc):
        started = time.perf_counter()
        self.callback(name, doc)
        if name == "stop":
            self.stop_seconds.append(time.perf_counter() - started)


def _percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


def run_stream(args) -> int:
    from bluesky import RunEngine

    from sfn_stream.simulated_beamline import load_demo_sample, simulated_beamline, xanes_scan
    from sfn_stream.live.catalog import TiledService
    from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer

    if args.scans < 1:
        raise CliError("--scans must be at least 1")
    out = console()
    sample = load_demo_sample()
    mono, xas, _ = simulated_beamline(sample, seed=7)
    with tempfile.TemporaryDirectory() as tmp, out.status("starting Tiled and loading models") as status:
        service = TiledService(tmp)
        try:
            client = service.client()
            writer_alone = _StopTimer(make_tiled_writer(client))
            plugin = SfnPlugin(make_tiled_writer(client))
            plugin.flush()
            RE = RunEngine({}, call_returns_result=False)
            walls = {"tiledwriter_alone": [], "plugin_and_tiledwriter": []}
            re_only = []
            # One untimed scan each warms caches (first table creation, model JIT paths).
            for i in range(args.scans + 1):
                for config in walls:
                    status.update(f"scan {i}/{args.scans}: {config}")
                    callback = writer_alone if config == "tiledwriter_alone" else plugin
                    token = RE.subscribe(callback)
                    started = time.perf_counter()
                    RE(xanes_scan(xas, mono, sample.absorber, composition=sample.formula, sample="bench"))
                    after_re = time.perf_counter()
                    if callback is plugin:
                        if not plugin.flush(timeout=60):
                            raise CliError("the plugin did not finish writing within 60 s")
                        if i:
                            re_only.append(after_re - started)
                    wall = time.perf_counter() - started
                    RE.unsubscribe(token)
                    if i:
                        walls[config].append(wall)
            plugin.close()
            stats = plugin.stats
            latencies = list(stats.stop_latency_seconds)[1:]
            predictions = list(stats.prediction_seconds)[1:]
            calls = list(stats.call_seconds)
            points = 200
        finally:
            service.close()
    alone = statistics.median(walls["tiledwriter_alone"])
    with_plugin = statistics.median(walls["plugin_and_tiledwriter"])
    result = {
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "platform": platform.platform()},
        "scans_per_configuration": args.scans,
        "points_per_scan": points,
        "stop_to_derived_stream_written_ms": {"p50": 1e3 * _percentile(latencies, 50),
                                              "p99": 1e3 * _percentile(latencies, 99),
                                              "max": 1e3 * max(latencies)},
        "preprocess_and_predict_ms": {"p50": 1e3 * _percentile(predictions, 50),
                                      "p99": 1e3 * _percentile(predictions, 99)},
        "per_event_overhead_us": {
            "runengine_thread_p50": 1e6 * _percentile(calls, 50),
            "runengine_thread_p99": 1e6 * _percentile(calls, 99),
            "wall_difference_per_point": 1e6 * (with_plugin - alone) / points,
        },
        "scan_wall_s": {"tiledwriter_alone_median": alone, "plugin_and_tiledwriter_median": with_plugin,
                        "plugin_runengine_only_median": statistics.median(re_only),
                        "ratio": with_plugin / alone,
                        "acquisition_ratio": statistics.median(re_only) / alone},
        "tiledwriter_alone_stop_ms": {"p50": 1e3 * _percentile(writer_alone.stop_seconds[1:], 50),
                                      "p99": 1e3 * _percentile(writer_alone.stop_seconds[1:], 99)},
        "targets": {"p99_ms": 50, "ratio": 1.10},
    }
    if args.json:
        print_json(result)
    else:
        _print(out, result)
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _print(out, r) -> None:
    lat, wall, ev = r["stop_to_derived_stream_written_ms"], r["scan_wall_s"], r["per_event_overhead_us"]
    out.print(f"[bold]sfn-stream bench stream[/bold]: {r['scans_per_configuration']} scans x "
              f"{r['points_per_scan']} points per configuration, {r['machine']['cpus']} CPUs")
    out.print(f"stop -> derived stream written: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms "
              f"(target p99 < 50 ms)")
    out.print(f"  of which preprocessing + prediction: p50 {r['preprocess_and_predict_ms']['p50']:.1f} ms")
    out.print(f"per-event overhead on the RunEngine thread: p50 {ev['runengine_thread_p50']:.1f} us, "
              f"p99 {ev['runengine_thread_p99']:.1f} us; wall difference {ev['wall_difference_per_point']:.0f} us/point")
    out.print(f"scan wall time: TiledWriter alone {wall['tiledwriter_alone_median']:.3f} s, plugin + TiledWriter "
              f"{wall['plugin_and_tiledwriter_median']:.3f} s, ratio {wall['ratio']:.3f} (target <= 1.10)")
    out.print(f"  RunEngine only (acquisition): {wall['plugin_runengine_only_median']:.3f} s, "
              f"ratio {wall['acquisition_ratio']:.3f}")
    stop = r["tiledwriter_alone_stop_ms"]
    out.print(f"for scale, TiledWriter alone on a stop document: p50 {stop['p50']:.1f} ms, p99 {stop['p99']:.1f} ms")
