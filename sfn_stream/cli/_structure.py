"""``sfn-stream infer-structure`` and ``sfn-stream evaluate structure``."""

from __future__ import annotations

import json
from pathlib import Path

from ._common import CliError, console, print_json
from ._predict import read_powder


def add_parser(sub) -> None:
    parser = sub.add_parser("infer-structure", help="candidate structures from elements, oxidation states and a PXRD file")
    parser.add_argument("--elements", required=True, help="the sample's elements, e.g. Ca,Mn,Al,O (2 to 5)")
    parser.add_argument("--xrd", required=True, type=Path, help="powder pattern: .xy / columns (2theta or Q, intensity) or pdCIF")
    parser.add_argument("--wavelength", type=float, help="X-ray wavelength in A (default: from the file, else 1.5406)")
    parser.add_argument("--axis", choices=("2theta", "q"), default=None,
                        help="first column: 2theta (deg) or Q (1/A) (default: what the column name says, else 2theta)")
    parser.add_argument("--oxidation", action="append", default=[], metavar="EL=STATE[:P/STATE:P]",
                        help="oxidation states, e.g. Mn=3 or Fe=2:0.7/3:0.3 (others: ICSD statistics); repeatable")
    parser.add_argument("--cn", action="append", default=[], metavar="EL=CN[:P/CN:P]",
                        help="coordination numbers, e.g. Mn=6 or Fe=4:0.3/6:0.7; repeatable")
    parser.add_argument("--crystal-system", metavar="SYSTEM[=P,...]",
                        help="crystal system(s), e.g. tetragonal or cubic=0.6,tetragonal=0.4 (default: all seven)")
    parser.add_argument("--space-group", metavar="NUMBER=P[,...]",
                        help="space-group probabilities, e.g. 62=0.5,14=0.2 (a PXRD model's top 5; default: no "
                             "space-group prior)")
    parser.add_argument("--sources", default="amcsd,aflow,robocrys",
                        help="template sources: amcsd, aflow, robocrys, materials_project, or CIF folders (comma list)")
    parser.add_argument("--cif-dir", action="append", default=[], type=Path, help="an extra folder of template CIFs")
    parser.add_argument("--top", type=int, default=5, help="number of candidates (default 5)")
    parser.add_argument("--relax", type=int, default=0, metavar="N",
                        help="relax the best N candidates with CHGNet and refit their patterns (needs chgnet; default 0)")
    parser.add_argument("--xanes-check", action="store_true", help="recompute XANES of the best candidates with FEFF")
    parser.add_argument("--xanes", action="append", default=[], metavar="EL=FILE", help="measured XANES for --xanes-check")
    parser.add_argument("--out", type=Path, help="folder for result.json and one CIF per candidate")
    parser.add_argument("--cache-dir", type=Path, help="template index cache (default ~/.cache/sfn-stream/structure)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run_infer)

    evaluate = sub.add_parser("evaluate", help="evaluations that print figures")
    which = evaluate.add_subparsers(dest="what", required=True, metavar="WHAT")
    from ._evaluate import add_xanes_parser  # sfn-stream evaluate xanes

    add_xanes_parser(which)
    from ._evaluate_xrd import add_indexing_parser, add_xrd_parser  # sfn-stream evaluate xrd, indexing

    add_xrd_parser(which)
    add_indexing_parser(which)
    from ._evaluate_ablation import add_ablation_parser  # evaluate xanes-ablation

    add_ablation_parser(which)
    structure = which.add_parser("structure", help="structure-inference benchmark (needs ../shared; slow)")
    structure.add_argument("--settings", default="true,perturbed", help="input settings: true,perturbed")
    structure.add_argument("--split", choices=("test", "dev"), default="test")
    structure.add_argument("--workers", type=int, default=1, help="queries run in this many processes (default 1)")
    structure.add_argument("--limit", type=int, help="at most this many materials per (origin, number of elements)")
    structure.add_argument("--space-group-prior", default="none,predicted", metavar="LIST",
                           help="run each query under these space-group priors, side by side: none, predicted "
                                "(search-match top 5 of the query's pattern), oracle (the true space group); "
                                "default none,predicted")
    structure.add_argument("--measured", action="store_true", help="only the measured single-phase patterns")
    structure.add_argument("--no-measured", action="store_true", help="skip the measured patterns")
    structure.add_argument("--save", type=Path, help="write the full results (records and summary) to this JSON file")
    structure.add_argument("--log", type=Path, help="append each query's record to this JSON-lines file")
    structure.add_argument("--json", action="store_true", help="print JSON")
    structure.set_defaults(run=run_evaluate)


def _tables(values: list[str], what: str) -> dict:
    from sfn_stream.core.structure import StructureInputError, parse_assignments

    out = {}
    for text in values:
        try:
            out.update(parse_assignments(text, what))
        except StructureInputError as err:
            raise CliError(str(err)) from err
    return out


def _systems(text: str | None) -> dict | None:
    if not text:
        return None
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, prob = part.partition("=")
        try:
            out[name.strip()] = float(prob) if prob else 1.0
        except ValueError as err:
            raise CliError(f"--crystal-system: cannot read {part!r} (use e.g. cubic=0.6,tetragonal=0.4)") from err
    return out


def _space_groups(text: str | None) -> dict | None:
    if not text:
        return None
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        number, _, prob = part.partition("=")
        try:
            out[int(number)] = float(prob) if prob else 1.0
        except ValueError as err:
            raise CliError(f"--space-group: cannot read {part!r} (use e.g. 62=0.5,14=0.2)") from err
    return out


def _read_xanes(specs: list[str], elements) -> dict:
    from sfn_stream.core.spectra import SpectrumFileError, preprocess_xanes_file

    out = {}
    for spec in specs:
        el, _, name = spec.partition("=")
        if not name:
            raise CliError(f"--xanes expects EL=FILE, got {spec!r}")
        try:
            out[el.strip()] = preprocess_xanes_file(Path(name), absorber=el.strip())
        except (SpectrumFileError, ValueError) as err:
            raise CliError(f"{name}: {err}") from err
    return out


def run_infer(args) -> int:
    from sfn_stream.core.structure import (
        InferenceRequest,
        RelaxationUnavailable,
        SourceUnavailable,
        StructureInputError,
        XrdInput,
        infer_structures,
    )

    pattern = read_powder(args.xrd)
    axis = args.axis or pattern.axis or "2theta"
    wavelength = args.wavelength or pattern.wavelength or (1.5406 if axis == "2theta" else None)
    elements = tuple(e.strip() for e in args.elements.split(",") if e.strip())
    if args.top < 1:
        raise CliError("--top must be at least 1")
    sources = [s.strip() for s in args.sources.split(",") if s.strip()] + [str(p) for p in args.cif_dir]
    request = InferenceRequest(
        elements=elements, xrd=XrdInput(pattern.x, pattern.intensity, axis, wavelength, str(args.xrd)),
        oxidation_states=_tables(args.oxidation, "oxidation"), coordination=_tables(args.cn, "cn"),
        crystal_systems=_systems(args.crystal_system), space_group_probabilities=_space_groups(args.space_group),
        xanes=_read_xanes(args.xanes, elements) if args.xanes else {},
    )
    if args.relax < 0:
        raise CliError("--relax must be 0 or more")
    if args.xanes_check and not args.xanes:
        raise CliError("--xanes-check needs at least one measured spectrum: --xanes Mn=FILE")
    try:
        result = infer_structures(request, sources=sources, top=args.top, xanes_check=args.xanes_check,
                                  progress=not args.json, cache_dir=args.cache_dir, relax=args.relax)
    except (StructureInputError, SourceUnavailable, RelaxationUnavailable) as err:
        raise CliError(str(err)) from err
    payload = result.to_dict(structures=bool(args.out))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for c in result.candidates:
            (args.out / f"rank{c.rank}_{c.formula}_{c.spacegroup_number}.cif").write_text(c.to_cif())
        (args.out / "result.json").write_text(json.dumps(payload, indent=2, default=str))
    if args.json:
        print_json(payload)
    else:
        _print_result(result, args.out)
    return 0


def _print_result(result, out: Path | None) -> None:
    from rich.table import Table

    con = console()
    if not result.candidates:
        con.print(f"[bold]no candidate[/bold]: {result.reason}")
        return
    table = Table(title="structure candidates")
    for column in ("rank", "formula", "system", "space group", "score", "p", "PXRD sim.", "template"):
        table.add_column(column)
    for c in result.candidates:
        table.add_row(str(c.rank), c.formula, c.crystal_system, c.spacegroup_symbol, f"{c.score:.1f}",
                      f"{c.probability:.2f}", f"{c.components['xrd_similarity']:.3f}",
                      f"{c.template_id} ({c.template_label or c.template_formula})")
    con.print(table)
    for note in result.notes:
        con.print(f"note: {note}")
    if out:
        con.print(f"written: {out}/result.json and {len(result.candidates)} CIF files")


def run_evaluate(args) -> int:
    from sfn_stream.offline.evaluation.structure_benchmark import SPACE_GROUP_PRIORS, evaluate_structure_inference

    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for s in settings:
        if s not in ("true", "perturbed"):
            raise CliError(f"--settings: {s!r} is not 'true' or 'perturbed'")
    priors = [s.strip() for s in args.space_group_prior.split(",") if s.strip()]
    for prior in priors:
        if prior not in SPACE_GROUP_PRIORS:
            raise CliError(f"--space-group-prior: {prior!r} is not one of {', '.join(SPACE_GROUP_PRIORS)}")
    try:
        payload = evaluate_structure_inference(
            settings, split=args.split, limit=args.limit, workers=args.workers, synthetic=not args.measured,
            measured=not args.no_measured, log_path=args.log, save_path=args.save, progress=not args.json,
            space_group_priors=priors or ["none"],
        )
    except FileNotFoundError as err:  # ../shared or the benchmark definition is missing
        raise CliError(str(err)) from err
    if args.json:
        print_json({k: v for k, v in payload.items() if k != "records"})
    else:
        _print_summary(payload)
    return 0


def _print_summary(payload: dict) -> None:
    """One table per input setting: top-1 / top-5 under each space-group prior side by side."""
    from rich.table import Table

    from sfn_stream.offline.evaluation.structure_benchmark import SPACE_GROUP_PRIORS

    con = console()
    summary = payload.get("summary", {})
    settings = sorted({key.split("+sg_")[0] for key in summary}, key=lambda s: (s != "true", s))  # true first
    for setting in settings:
        found = {(key.split("+sg_", 1) + ["none"])[1]: rows for key, rows in summary.items()
                 if key.split("+sg_")[0] == setting}
        variants = {prior: found[prior] for prior in SPACE_GROUP_PRIORS if prior in found}
        table = Table(title=f"structure inference, {setting} inputs ({payload.get('split')} split); "
                            "top-1 / top-5 (top-1 with the space group right) per space-group prior")
        for column in ("stratum", "n", *variants, "true SG in predicted top 5", "type available",
                       "s/query (mean)", "max"):
            table.add_column(column)
        for key, row in next(iter(variants.values())).items():
            cells = [_hits(variants[prior].get(key)) for prior in variants]
            named = variants.get("predicted", {}).get(key, {}).get("true_space_group_in_table")
            slowest = max(variants[prior].get(key, {}).get("seconds_max", 0.0) for prior in variants)
            table.add_row(key, str(row["n"]), *cells, "-" if named is None else f"{named:.2f}",
                          f"{row['template_type_available']:.2f}", f"{row['seconds_mean']:.1f}", f"{slowest:.1f}")
        con.print(table)
    for row in payload.get("measured", []):
        best = row.get("candidates", [[None]])[0] if row.get("candidates") else None
        con.print(f"{row['file']}: {row['formula']} ({'system given' if row.get('crystal_system_given') else 'system unknown'}) "
                  f"-> rank of right answer {row.get('rank_of_right_answer')}; best {best}")


def _hits(row: dict | None) -> str:
    if row is None:
        return "-"
    space_group = f" ({row['top1_space_group']:.2f})" if "top1_space_group" in row else ""
    return f"{row['top1']:.2f} / {row['top5']:.2f}{space_group}"
