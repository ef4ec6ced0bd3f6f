"""``sfn-stream bench stream|NAME``: the benchmarks of :mod:`sfn_stream.offline.evaluation`, their options and figures.

``bench stream`` (the plugin's cost on a live beamline) is measured by
:mod:`sfn_stream.offline.evaluation.stream_overhead`; every other benchmark parses its own options.
"""

from __future__ import annotations

import argparse

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
    from ._backfill import add_bench_parser

    add_bench_parser(which)


def run_module(args) -> int:
    """Hand the rest of the command line to the benchmark module's own parser."""
    import importlib

    from sfn_stream.offline.evaluation import BENCHMARKS

    module = importlib.import_module(f"sfn_stream.offline.evaluation.{BENCHMARKS[args.bench_name][0]}")
    return module.main(args.argv)


def run_stream(args) -> int:
    from sfn_stream.offline.evaluation.stream_overhead import StreamBenchmarkError, measure_stream_overhead

    if args.scans < 1:
        raise CliError("--scans must be at least 1")
    out = console()
    with out.status("starting Tiled and loading models") as status:
        try:
            result = measure_stream_overhead(args.scans, status=status.update)
        except StreamBenchmarkError as err:
            raise CliError(str(err)) from err
    if args.json:
        print_json(result)
    else:
        _print(out, result)
    return 0


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
