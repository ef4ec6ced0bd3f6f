"""The options of an offline FEFF batch run, shared by ``sfn-stream dataset batch-run`` and
``python -m sfn_stream.offline.corpus.batch_run``.

A leaf module (standard library only): the command line declares these without importing the corpus
package, and the runner needs nothing beyond numpy and feff10.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_batch_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch", type=Path, help="batch file from `sfn-stream dataset batch-export`")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="FEFF processes at a time (default: the CPUs)")
    parser.add_argument("--out", type=Path, required=True,
                        help="results, one JSON line per finished item (appended; keys there are not rerun)")
    parser.add_argument("--time-limit", type=float,
                        help="seconds: start no item after this and stop the running ones (they are not written)")
    parser.add_argument("--scratch", type=Path, help="folder for the FEFF runs (default: the system's temp folder)")
