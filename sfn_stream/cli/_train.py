"""``sfn-stream train xanes|xrd``: rebuild the model bundles in ``models/`` from the shared data."""

from __future__ import annotations

from pathlib import Path

from ._common import CliError, console


def add_parser(sub) -> None:
    parser = sub.add_parser("train", help="train a model bundle (needs ../shared)")
    parser.add_argument("model", choices=("xanes", "xanes-3d", "xrd", "xrd-search-match", "xrd-ensemble",
                                          "xrd-indexed"),
                        help="xanes: the Cu bundle; xanes-3d: one model for Ti..Zn from data/corpus; xrd: crystal system; "
                        "xrd-search-match: kNN search-match over the committed stick table (no ../shared needed); "
                        "xrd-ensemble: search-match and the xrd network mixed, fitted on validation; "
                        "xrd-indexed: search-match with metric-indexing evidence, fitted on validation")
    parser.add_argument("--out", type=Path, help="bundle folder (default: models/<bundle name>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="training epochs (default: the recipe's)")
    parser.add_argument("--members", type=int, help="xanes-3d: ensemble members (default 3)")
    parser.add_argument("--budget", type=float,
                        help="xanes-3d: wall-clock budget in seconds for all members (default 3600)")
    parser.add_argument("--sticks", type=Path,
                        help="xrd-search-match: stick table (default: data/xrd_sticks/xrd_sticks.npz)")
    parser.add_argument("--splits-dir", type=Path,
                        help="xrd-search-match: folder of xrd_{train,val,test}.txt for --sticks (default: data/splits)")
    parser.add_argument("--sharpen-probability", type=float,
                        help="xanes-3d: share of training views sharpened as HERFD scans are (default 0: off)")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="BUNDLE",
                        help="xanes-3d: no training; one ensemble from the members of these bundles (same "
                             "architecture), calibrated afresh on the validation split, written to --out")
    parser.add_argument("--splits-only", action="store_true",
                        help="xanes-3d: (re)write data/splits/xanes_3d_splits.json from data/corpus and stop")
    parser.set_defaults(run=run)


def run(args) -> int:
    from sfn_stream.core.networks import models_dir
    from sfn_stream.core.predict import XANES_BUNDLE
    from sfn_stream.offline.shared import shared_dir
    from sfn_stream.offline.training import SharedDataMissing

    if args.model == "xrd-search-match":
        return _build_xrd_search_match(args)
    if args.model in ("xrd-ensemble", "xrd-indexed"):
        return _build_xrd_ensemble(args)
    options = {"seed": args.seed, "progress": True}
    if args.epochs:
        options["epochs"] = args.epochs
    try:
        shared_dir()  # say so before any work (the readers behind it cache what they load)
        if args.model == "xanes-3d":
            return _train_xanes_3d(args, options)
        if args.model == "xanes":
            from sfn_stream.offline.training import train_xanes_bundle

            bundle = train_xanes_bundle(args.out or models_dir() / XANES_BUNDLE, **options)
        else:
            from sfn_stream.offline.training import train_xrd_bundle

            bundle = train_xrd_bundle(args.out or models_dir() / "xrd-crystal-system", **options)
    except SharedDataMissing as err:
        raise CliError(f"training needs the shared development data: {err}") from err
    console().print(f"wrote {bundle.path} ({bundle.id})")
    return 0


def _build_xrd_search_match(args) -> int:
    from sfn_stream.offline.training import build_search_match_bundle

    options = {key: value for key, value in (("sticks", args.sticks), ("splits_dir", args.splits_dir)) if value}
    try:
        bundle = build_search_match_bundle(args.out, seed=args.seed, **options)
    except (FileNotFoundError, ValueError) as err:
        raise CliError(str(err)) from err
    console().print(f"wrote {bundle.path} ({bundle.id}); k={bundle.card['calibration']['k']}, "
                    f"T={bundle.card['calibration']['temperature']}")
    return 0


def _build_xrd_ensemble(args) -> int:
    """xrd-ensemble or xrd-indexed: a combination fitted on validation over the bundles already in models/."""
    from sfn_stream.core.networks import BundleError
    from sfn_stream.offline.training import build_xrd_ensemble_bundle, build_xrd_indexed_bundle

    build = build_xrd_indexed_bundle if args.model == "xrd-indexed" else build_xrd_ensemble_bundle
    options = {key: value for key, value in (("sticks", args.sticks), ("splits_dir", args.splits_dir)) if value}
    try:
        bundle = build(args.out, seed=args.seed, **options)
    except (FileNotFoundError, ValueError, BundleError) as err:
        raise CliError(str(err)) from err
    if args.model == "xrd-indexed":
        noisy = bundle.card["metrics"]["val_noisy_protocol"]
        console().print(f"wrote {bundle.path} ({bundle.id}); validation, noisy protocol, cross-validated: "
                        f"{noisy['combined_cross_validated']['accuracy']:.3f} vs search-match "
                        f"{noisy['search_match']['accuracy']:.3f}")
        return 0
    fit = bundle.card["calibration"]
    console().print(f"wrote {bundle.path} ({bundle.id}); network weight {fit['network_weight']}, T {fit['temperature']}")
    return 0


def _train_xanes_3d(args, options) -> int:
    from sfn_stream.core.networks import BundleError, models_dir
    from sfn_stream.offline.training import (
        DEFAULT_STICK_TABLE,
        XANES_3D_BUNDLE,
        Augmentation3d,
        read_corpus_materials,
        read_unified_splits,
        sync_xrd_splits,
        train_xanes3d_bundle,
        write_unified_splits,
    )

    if args.splits_only:
        materials = read_corpus_materials(progress=True)
        data = write_unified_splits(materials)
        console().print(f"wrote data/splits/xanes_3d_splits.json: {data['counts']}, "
                        f"{data['n_test_chemical_system']} in the chemical-system test")
        if DEFAULT_STICK_TABLE.is_file():  # the PXRD table's splits follow the same assignment
            xrd = sync_xrd_splits(materials, read_unified_splits())
            console().print(f"wrote data/splits/xrd_{{train,val,test}}.txt: {xrd['counts']}, changed {xrd['moved']}")
        return 0
    out = args.out or models_dir() / XANES_3D_BUNDLE
    if args.combine:
        from sfn_stream.offline.training import (
            TrainingDataError,
            combine_xanes3d_bundles,
        )

        try:
            bundle = combine_xanes3d_bundles(args.combine, out)
        except (TrainingDataError, BundleError) as err:
            raise CliError(str(err)) from err
        console().print(f"wrote {bundle.path} ({bundle.id}): {bundle.card['architecture']['ensemble_members']} "
                        "members; figures: sfn-stream evaluate xanes --bundle ...")
        return 0
    if args.sharpen_probability is not None:
        if not 0 <= args.sharpen_probability <= 1:
            raise CliError("--sharpen-probability: a share between 0 and 1")
        options["augmentation"] = Augmentation3d(sharpen_probability=args.sharpen_probability)
    bundle = train_xanes3d_bundle(out, members=args.members, wall_budget_s=args.budget, **options)
    console().print(f"wrote {bundle.path} ({bundle.id}); figures: sfn-stream evaluate xanes")
    return 0
