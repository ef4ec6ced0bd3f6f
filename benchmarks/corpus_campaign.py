"""Throughput of the corpus campaign: FEFF seconds per site (median, IQR, range) and sites per hour
with 1 and 2 local Dask workers, measured in one run on the same sites.

    python benchmarks/corpus_campaign.py [--sites 8] [--workers 1,2] [--settings NAME] [--json]

Same as `sfn-stream dataset bench`; the sites are small solids (Cu2O, CuO, Fe2O3, bcc Fe) computed
with the corpus's FEFF settings. The machine's load average is printed with the figures: on a shared
machine the 2-worker gain says as much about the other jobs as about the campaign.
"""

from __future__ import annotations

import sys

from sfn_stream.cli import main

if __name__ == "__main__":
    sys.exit(main(["dataset", "bench", *sys.argv[1:]]))
