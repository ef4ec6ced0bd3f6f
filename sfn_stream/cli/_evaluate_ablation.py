"""``sfn-stream evaluate xanes-ablation [--json]``: accuracy of the 3d-metal XANES model with each energy region
of the window removed, beside the intact window and the composition-only rule."""

from __future__ import annotations

from pathlib import Path

from ._common import CliError, print_json


def add_ablation_parser(which) -> None:
    """``xanes-ablation`` under ``sfn-stream evaluate`` (whose parser lives in ``_structure``)."""
    parser = which.add_parser("xanes-ablation", help="3d-metal XANES model: test accuracy with the pre-edge, edge, "
                              "white line, post-edge or whole spectrum removed")
    parser.add_argument("--bundle", type=Path, help="bundle folder (default: models/xanes-specfusion-3d)")
    parser.add_argument("--limit", type=int, help="only the first N test units (a quick look)")
    parser.add_argument("--attributions", action="store_true",
                        help="also average the integrated-gradient region shares over the units (about a minute)")
    parser.add_argument("--write-card", action="store_true",
                        help="also write the table into the bundle's card.json under 'interpretability'")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run_ablation)


def run_ablation(args) -> int:
    from sfn_stream.core.networks import BundleError, models_dir
    from sfn_stream.offline.evaluation.xanes_ablation import (
        evaluate_ablation,
        format_ablation,
        write_card_interpretability,
    )
    from sfn_stream.offline.training import XANES_3D_BUNDLE

    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be at least 1, got {args.limit}")
    if args.write_card and args.limit:
        raise CliError("--write-card takes the whole test split: leave out --limit")
    try:
        report = evaluate_ablation(args.bundle, limit=args.limit, attributions=args.attributions,
                                   progress=not args.json)
    except BundleError as err:
        raise CliError(str(err)) from err
    if args.write_card:
        write_card_interpretability(args.bundle or models_dir() / XANES_3D_BUNDLE, report)
    if args.json:
        print_json(report)
    else:
        print("\n".join(format_ablation(report)))
    return 0
