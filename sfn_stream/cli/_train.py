"""``sfn-stream train xanes|xrd``: rebuild the model bundles in ``models/`` from the shared data."""

from __future__ import annotations

from pathlib import Path

from ._common import CliError, console


def add_parser(sub) -> None:
    parser = sub.add_parser("train", help="train a model bundle (needs ../shared)")
    parser.add_argument("model", choices=("xanes", "xrd"))
    parser.add_argument("--out", type=Path, help="bundle folder (default: models/<bundle name>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="training epochs (default: the recipe's)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from sfn_stream.core.networks import models_dir
    from sfn_stream.core.predict import XANES_BUNDLE, XRD_BUNDLE
    from sfn_stream.offline.training import SharedDataMissing
    from sfn_stream.offline.shared import shared_dir

    options = {"seed": args.seed, "progress": True}
    if args.epochs:
        options["epochs"] = args.epochs
    try:
        shared_dir()  # say so before any work (the readers behind it cache what they load)
        if args.model == "xanes":
            from sfn_stream.offline.training import train_xanes_bundle

            bundle = train_xanes_bundle(args.out or models_dir() / XANES_BUNDLE, **options)
        else:
            from sfn_stream.offline.training import train_xrd_bundle

            bundle = train_xrd_bundle(args.out or models_dir() / XRD_BUNDLE, **options)
    except SharedDataMissing as err:
        raise CliError(f"training needs the shared development data: {err}") from err
    console().print(f"wrote {bundle.path} ({bundle.id})")
    return 0
