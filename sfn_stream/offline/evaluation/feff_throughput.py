"""``sfn-stream dataset bench``: the corpus campaign's FEFF throughput, seconds per site with 1, 2, ... Dask workers.

The same FEFF sites run through a local Dask cluster of each size in turn, in one process.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from sfn_stream.core.simulation import FeffSettings

# Small, fixed structures, each site computed as its own material, repeated as needed. Rock-salt FeO
# is left out: its SCF loop diverges at the chosen settings (the campaign's fallback handles it).
BENCH_OXIDES = ("Cu2O", "CuO", "Fe2O3")
BENCH_METALS = ("Fe",)


class ThroughputError(RuntimeError):
    """No FEFF site finished with one of the worker counts."""


def bench_materials(n_sites: int) -> list:
    """``n_sites`` one-site materials cycling through the bench structures."""
    from sfn_stream.offline.corpus import CorpusMaterial, metal_site_groups, metal_structure, oxide_structure

    base = [oxide_structure(name) for name in BENCH_OXIDES] + [metal_structure(name) for name in BENCH_METALS]
    materials = []
    for i in range(n_sites):
        structure = base[i % len(base)]
        groups = metal_site_groups(structure)
        metal = next(iter(groups))
        materials.append(CorpusMaterial(f"bench-{i:03d}", "reference", f"bench-{i}", "bench",
                                        structure.composition.reduced_formula, structure, {metal: groups[metal][:1]}))
    return materials


def campaign_throughput(n_sites: int, worker_counts: Sequence[int], settings: FeffSettings) -> dict[str, Any]:
    """Seconds per site (median, quartiles, range), wall time and sites per hour for each worker count."""
    from sfn_stream.offline.corpus import CampaignConfig, run_campaign

    materials = bench_materials(n_sites)
    runs = {}
    for workers in worker_counts:
        with tempfile.TemporaryDirectory() as tmp:
            config = CampaignConfig(workdir=Path(tmp), settings=settings, kinds=("feff",))
            started = time.perf_counter()
            summary = run_campaign([], materials, config, n_workers=workers, progress=False)
            wall = time.perf_counter() - started
            per_site = [r["value"]["feff_seconds"] for r in config.store.records() if r["ok"]]
        if not per_site:
            raise ThroughputError(f"no FEFF site finished with {workers} worker(s): {summary.failures}")
        q1, q3 = (statistics.quantiles(per_site, n=4)[i] for i in (0, 2)) if len(per_site) > 1 else (per_site[0],) * 2
        runs[workers] = {
            "workers": workers, "sites": len(per_site), "failed": summary.failed,
            "seconds_per_site_median": statistics.median(per_site), "seconds_per_site_q1": q1,
            "seconds_per_site_q3": q3, "seconds_per_site_min": min(per_site), "seconds_per_site_max": max(per_site),
            "wall_seconds": wall, "sites_per_hour": 3600 * len(per_site) / wall,
        }
    return {"settings": settings.describe(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
            "runs": list(runs.values())}
