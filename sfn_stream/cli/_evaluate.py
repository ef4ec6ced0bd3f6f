"""``sfn-stream evaluate xanes [--json]``: figures of the 3d-metal XANES model beside its baselines."""

from __future__ import annotations

from pathlib import Path

from ._common import CliError, print_json


def add_xanes_parser(which) -> None:
    """``xanes`` under ``sfn-stream evaluate`` (whose parser lives in ``_structure``)."""
    xanes = which.add_parser("xanes", help="3d-metal XANES model: per absorber x task x input mode, test split, "
                             "measured dev set")
    xanes.add_argument("--bundle", type=Path, help="bundle folder (default: models/xanes-specfusion-3d)")
    xanes.add_argument("--no-dev", action="store_true", help="leave out the measured development set")
    xanes.add_argument("--measured", type=Path, metavar="DIR",
                       help="measured files to judge instead of the development set: DIR/labels.csv with columns file, "
                            "elements and optionally absorber, oxidation_state, cn (as ../shared/data/"
                            "xanes_experimental_dev)")
    xanes.add_argument("--measured-only", action="store_true",
                       help="only the measured files (seconds): leave out the corpus test sets")
    xanes.add_argument("--json", action="store_true", help="print one JSON object")
    xanes.add_argument("--learning-curve", action="store_true",
                       help="also train one-member models on 25/50/100%% of the FEFF10 training materials (minutes)")
    xanes.add_argument("--write-card", action="store_true", help="also write the figures into the bundle's card.json")
    xanes.add_argument("--plot", type=Path, metavar="PNG",
                       help="also draw per-metal accuracy beside the baselines, reliability diagrams and the measured "
                            "files into this PNG")
    xanes.set_defaults(run=run_xanes)


def run_xanes(args) -> int:
    from sfn_stream.core.networks import BundleError, models_dir
    from sfn_stream.offline.evaluation.xanes_3d_eval import (
        evaluate_xanes,
        format_learning_curve,
        format_report,
        learning_curve,
        write_card_metrics,
    )
    from sfn_stream.offline.training import XANES_3D_BUNDLE

    if args.measured_only and (args.write_card or args.plot or args.learning_curve):
        raise CliError("--measured-only leaves out the test sets that --write-card, --plot and --learning-curve need")
    if args.measured and args.write_card:
        raise CliError("--write-card records the development set's figures; leave out --measured")
    try:
        report = evaluate_xanes(args.bundle, dev=not args.no_dev, progress=not args.json, measured=args.measured,
                                simulated=not args.measured_only)
    except (BundleError, FileNotFoundError) as err:
        raise CliError(str(err)) from err
    if args.learning_curve:
        report["learning_curve"] = learning_curve(progress=not args.json)
    if args.write_card:
        write_card_metrics(args.bundle or models_dir() / XANES_3D_BUNDLE, report)
    if args.plot:
        from ._evaluate_figure import evaluation_figure

        evaluation_figure(args.plot, report)
    if args.json:
        print_json(report)
    else:
        print("\n".join(format_report(report)))
        if "learning_curve" in report:
            print("\n".join(format_learning_curve(report["learning_curve"])))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0
