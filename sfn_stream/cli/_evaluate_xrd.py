"""``sfn-stream evaluate xrd [--json]``: PXRD crystal-system figures of bundles beside their baselines."""

from __future__ import annotations

from pathlib import Path

from ._common import CliError, print_json


def add_xrd_parser(which) -> None:
    """``xrd`` under ``sfn-stream evaluate`` (whose parser lives in ``_structure``)."""
    xrd = which.add_parser("xrd", help="PXRD classifier: noisy formula-disjoint, clean, structure-type-disjoint and "
                           "measured patterns, beside 1-NN and majority baselines")
    xrd.add_argument("--bundle", type=Path, action="append", default=[],
                     help="bundle folder (repeatable; default: the shipped default, models/xrd-indexed)")
    xrd.add_argument("--sticks", type=Path, help="stick table (default: data/xrd_sticks/xrd_sticks.npz)")
    xrd.add_argument("--splits-dir", type=Path,
                     help="folder of xrd_{train,val,test}.txt for --sticks (default: data/splits)")
    xrd.add_argument("--max-test", type=int, help="at most this many structures per test set (default: all)")
    xrd.add_argument("--max-reference", type=int,
                     help="at most this many training structures in the 1-NN reference (default: all)")
    xrd.add_argument("--no-measured", action="store_true", help="leave out the measured patterns (../shared)")
    xrd.add_argument("--measured", type=Path, metavar="DIR",
                     help="measured patterns to judge instead of the development set: DIR/labels.csv with columns "
                          "file, crystal_system and optionally formula or elements, phases, wavelength_A")
    xrd.add_argument("--measured-only", action="store_true", help="only the measured patterns: no simulated test sets")
    xrd.add_argument("--brief", action="store_true", help="summary lines only (no per-class rows, no confusion)")
    xrd.add_argument("--write-card", action="store_true",
                     help="put each bundle's test figures (with the baselines') into its card's metrics.test")
    xrd.add_argument("--json", action="store_true", help="print one JSON object")
    xrd.add_argument("--plot", type=Path, metavar="PNG",
                     help="also draw accuracy per test set beside the targets, reliability, the first bundle's "
                          "confusion matrix and the networks' learning curves into this PNG")
    xrd.set_defaults(run=run_xrd)


def add_indexing_parser(which) -> None:
    """``indexing`` under ``sfn-stream evaluate``: does the powder indexing find each structure's own cell?"""
    indexing = which.add_parser("indexing", help="PXRD indexing diagnostic: per crystal system, how often a "
                                "structure's own cell indexes its peaks and how often the search finds such a cell")
    indexing.add_argument("--split", choices=("val", "test"), default="val",
                          help="formula-disjoint structures of this split (default val)")
    indexing.add_argument("--max", type=int, help="at most this many structures (drawn with a fixed seed)")
    indexing.add_argument("--sticks", type=Path, help="stick table (default: data/xrd_sticks/xrd_sticks.npz)")
    indexing.add_argument("--splits-dir", type=Path,
                          help="folder of xrd_{train,val,test}.txt for --sticks (default: data/splits)")
    indexing.add_argument("--json", action="store_true", help="print one JSON object")
    indexing.set_defaults(run=run_indexing)


def run_indexing(args) -> int:
    from sfn_stream.core import paths
    from sfn_stream.offline.evaluation.xrd_indexing_eval import evaluate_indexing, format_indexing_report
    from sfn_stream.offline.training import DEFAULT_STICK_TABLE

    if args.max is not None and args.max < 1:
        raise CliError("--max must be at least 1")
    try:
        report = evaluate_indexing(args.sticks or DEFAULT_STICK_TABLE, args.splits_dir or paths.SPLITS_DIR,
                                   split=args.split, max_structures=args.max, progress=not args.json)
    except FileNotFoundError as err:
        raise CliError(str(err)) from err
    if args.json:
        print_json(report)
    else:
        print("\n".join(format_indexing_report(report)))
    return 0


def run_xrd(args) -> int:
    from sfn_stream.core import paths
    from sfn_stream.core.networks import BundleError, models_dir
    from sfn_stream.core.predict import XRD_BUNDLE
    from sfn_stream.offline.evaluation.xrd_eval import (
        evaluate_xrd,
        format_report,
        write_card_metrics,
    )
    from sfn_stream.offline.training import DEFAULT_STICK_TABLE

    for name in ("max_test", "max_reference"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1")
    if args.measured_only and (args.write_card or args.plot):
        raise CliError("--measured-only leaves out the test sets that --write-card and --plot need")
    if args.measured and args.write_card:
        raise CliError("--write-card records the development set's figures; leave out --measured")
    bundles = args.bundle or [models_dir() / XRD_BUNDLE]
    try:
        report = evaluate_xrd(bundles, sticks=args.sticks or DEFAULT_STICK_TABLE,
                              splits_dir=args.splits_dir or paths.SPLITS_DIR, max_test=args.max_test,
                              max_reference=args.max_reference, measured=not args.no_measured,
                              progress=not args.json, measured_dir=args.measured, simulated=not args.measured_only)
    except (BundleError, FileNotFoundError) as err:
        raise CliError(str(err)) from err
    if args.write_card:
        for bundle in bundles:
            write_card_metrics(bundle, report)
    if args.plot:
        from ._evaluate_xrd_figure import xrd_evaluation_figure

        xrd_evaluation_figure(args.plot, report, bundles)
    if args.json:
        print_json(report)
    else:
        print("\n".join(format_report(report, details=not args.brief)))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0
