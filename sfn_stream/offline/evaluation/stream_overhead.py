"""``sfn-stream bench stream``: what the plugin costs a live beamline, measured in one run.

Interleaves 200-point XANES scans on the simulated beamline written by TiledWriter alone
and by the plugin + TiledWriter (same server, same writer settings) and reports:
- latency from the XANES stop document to the derived stream being written (stop handled
  by the writer, derived stream included): p50, p99;
- per-event overhead: seconds the plugin takes on the RunEngine's thread per document, and
  the wall-time difference per point;
- wall time of a scan (RunEngine plus everything written) for both, and their ratio; and the
  acquisition ratio (the RunEngine's own time, which is what the plugin must not stall);
- for scale: how long TiledWriter alone spends on a stop document (the raw run's own flush).
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from typing import Any, Callable

import numpy as np

POINTS_PER_SCAN = 200
TARGETS = {"p99_ms": 50, "ratio": 1.10}


class StreamBenchmarkError(RuntimeError):
    """The plugin did not finish a scan's derived stream in time."""


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


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def measure_stream_overhead(scans: int, status: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``scans`` timed scans (after one untimed warm-up) per configuration; the figures as a dict.

    ``status`` receives a line before each scan (e.g. a console spinner's ``update``).
    """
    from bluesky import RunEngine

    from sfn_stream.live.catalog import TiledService
    from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer
    from sfn_stream.simulated_beamline import load_demo_sample, simulated_beamline, xanes_scan

    status = status or (lambda line: None)
    sample = load_demo_sample()
    mono, xas, _ = simulated_beamline(sample, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
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
            for i in range(scans + 1):
                for config in walls:
                    status(f"scan {i}/{scans}: {config}")
                    callback = writer_alone if config == "tiledwriter_alone" else plugin
                    token = RE.subscribe(callback)
                    started = time.perf_counter()
                    RE(xanes_scan(xas, mono, sample.absorber, composition=sample.formula, sample="bench"))
                    after_re = time.perf_counter()
                    if callback is plugin:
                        if not plugin.flush(timeout=60):
                            raise StreamBenchmarkError("the plugin did not finish writing within 60 s")
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
        finally:
            service.close()
    alone = statistics.median(walls["tiledwriter_alone"])
    with_plugin = statistics.median(walls["plugin_and_tiledwriter"])
    return {
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "platform": platform.platform()},
        "scans_per_configuration": scans,
        "points_per_scan": POINTS_PER_SCAN,
        "stop_to_derived_stream_written_ms": {"p50": 1e3 * _percentile(latencies, 50),
                                              "p99": 1e3 * _percentile(latencies, 99),
                                              "max": 1e3 * max(latencies)},
        "preprocess_and_predict_ms": {"p50": 1e3 * _percentile(predictions, 50),
                                      "p99": 1e3 * _percentile(predictions, 99)},
        "per_event_overhead_us": {
            "runengine_thread_p50": 1e6 * _percentile(calls, 50),
            "runengine_thread_p99": 1e6 * _percentile(calls, 99),
            "wall_difference_per_point": 1e6 * (with_plugin - alone) / POINTS_PER_SCAN,
        },
        "scan_wall_s": {"tiledwriter_alone_median": alone, "plugin_and_tiledwriter_median": with_plugin,
                        "plugin_runengine_only_median": statistics.median(re_only),
                        "ratio": with_plugin / alone,
                        "acquisition_ratio": statistics.median(re_only) / alone},
        "tiledwriter_alone_stop_ms": {"p50": 1e3 * _percentile(writer_alone.stop_seconds[1:], 50),
                                      "p99": 1e3 * _percentile(writer_alone.stop_seconds[1:], 99)},
        "targets": dict(TARGETS),
    }
