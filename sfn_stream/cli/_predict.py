"""``sfn-stream predict xanes|xrd FILE``: predictions for files, with confidence and quality flags."""

from __future__ import annotations

import sys
from pathlib import Path

from ._common import EXIT_USAGE, CliError, console, print_json


def add_parser(sub) -> None:
    parser = sub.add_parser("predict", help="predict from a XANES or PXRD file")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")

    xanes = kinds.add_parser("xanes", help="K-edge XANES: oxidation state, coordination number, density")
    xanes.add_argument("files", type=Path, nargs="+", metavar="FILE", help="one or more files: XDI, an Athena project (.prj), or columns (comma, semicolon, tab or "
                                                  "space; a header naming energy and mu/norm/flat or i0+it/if; none: "
                                                  "energy, mu), eV or keV")
    xanes.add_argument("--absorber", help="absorbing element (default: XDI Element.symbol, else the 3d-metal K edge the energies "
                            "show, among --elements when given, else the file name)")
    xanes.add_argument("--elements", help="the sample's elements (Cu,O) or formula (Cu2O)")
    xanes.add_argument("--group", metavar="LABEL",
                       help="Athena project (.prj): the groups to predict, by label (shell pattern, any case; "
                            "default: every mu(E) group)")
    xanes.add_argument("--edge", action="append", default=[], metavar="EL=FILE",
                       help="another K edge of the same sample, fused into one prediction (repeatable; needs a "
                            "bundle covering every edge, e.g. the 3d-metal one)")
    xanes.add_argument("--json", action="store_true", help="print JSON")
    xanes.set_defaults(run=run_xanes)

    xrd = kinds.add_parser("xrd", help="powder pattern: crystal system")
    xrd.add_argument("files", type=Path, nargs="+", metavar="FILE",
                     help="one or more .xy / column files (2theta or Q, intensity; pyFAI, Fit2D .chi, .xye), pdCIF, "
                          ".xrdml or .ras")
    xrd.add_argument("--wavelength", type=float, default=None,
                     help="X-ray wavelength in Angstrom (default: from the file, else 1.5406, Cu K-alpha)")
    xrd.add_argument("--axis", choices=("2theta", "q"), default=None,
                     help="first column: 2theta (deg) or Q (1/A) (default: what the column name says, as pyFAI "
                          "writes it (2th_deg, q_nm^-1, q_A^-1), else 2theta)")
    xrd.add_argument("--elements", help="the sample's elements (Mn,O; of a formula only the elements are used): the "
                                        "search-match bundle then ranks its references by chemistry too")
    xrd.add_argument("--bundle", type=Path, help="a PXRD bundle folder instead of the default (models/xrd-indexed), "
                                                 "e.g. models/xrd-ensemble or models/xrd-crystal-system")
    xrd.add_argument("--json", action="store_true", help="print JSON")
    xrd.set_defaults(run=run_xrd)


def run_xanes(args) -> int:
    if args.edge and len(args.files) > 1:
        raise CliError("--edge fuses other edges of one sample: give one FILE with it")
    scans = _xanes_scans(args)
    # Imported only now: it loads torch (seconds), which an unusable file should not wait for.
    from sfn_stream.core.predict import PredictorError, default_registry

    results = []
    for name, channels in scans:
        try:
            if isinstance(channels, Exception):
                raise channels
            results.append(_predict_xanes(args, name, channels, default_registry()))
        except (PredictorError, CliError) as err:
            if len(scans) == 1:
                raise CliError(str(err)) from err
            results.append({"kind": "xanes", "status": "refused", "reason": str(err)})  # the others go on
    if len(results) == 1:
        return _report(args, results[0], file=scans[0][0])
    return _report_all(args, results, [name for name, _ in scans])


def _xanes_scans(args) -> list[tuple[str, dict | Exception]]:
    """(name, preprocess_xanes channels, or the error that stops it) of every scan the files hold: one per
    file, or the chosen groups of an Athena project (``--group``; every mu(E) group without it)."""
    from sfn_stream.core.spectra import (
        SpectrumFileError,
        is_athena_project,
        read_athena,
        read_spectrum,
        xanes_channels,
    )

    scans: list[tuple[str, dict | Exception]] = []
    projects = [path for path in args.files if is_athena_project(path)]
    if args.group and not projects:
        raise CliError("--group chooses groups of an Athena project; no FILE is one")
    for path in args.files:
        try:
            if path in projects:
                scans += [(s.path, xanes_channels(s)) for s in read_athena(path, args.group)]
            else:
                scans.append((str(path), xanes_channels(read_spectrum(path))))
        except SpectrumFileError as err:
            if len(args.files) == 1:
                raise CliError(str(err)) from err
            scans.append((str(path), CliError(str(err))))
    return scans


def _predict_xanes(args, name: str, channels: dict, registry) -> dict:
    from sfn_stream.core.spectra import element_symbol, find_absorber

    absorber = element_symbol(args.absorber) if args.absorber else find_absorber(channels, name, _candidates(args))[0]
    channels.pop("absorber", None)
    channels.pop("edge", None)
    if not absorber:
        raise CliError(f"{name}: say which element absorbs (--absorber Cu); neither the file nor its "
                       "energies name one 3d-metal K edge")
    composition = args.elements  # None: nothing known of the sample (the bundle's card says how it copes)
    flags = [] if args.elements else ["composition_unknown"]
    extra_edges = _extra_edges(args.edge, absorber)
    if extra_edges:
        predictor = registry.predictor_for_edges("xanes", [absorber, *extra_edges])
    else:
        predictor = registry.predictor("xanes", absorber, args.elements)
    predictor.check_request(absorber, [absorber] if not args.elements else _elements(args.elements))
    energy = channels.pop("energy")
    prediction, window = predictor.predict_scan(energy, absorber=absorber, composition=composition,
                                                extra_flags=flags, **channels)
    if extra_edges and window.usable:
        prediction = predictor.predict_windows([window, *_edge_windows(extra_edges)], composition,
                                               extra_flags=flags)
    result = prediction.plain(absorber)
    if extra_edges:
        result["per_element"] = {element: {task: vars(value) for task, value in tasks.items()}
                                 for element, tasks in prediction.per_element.items()}
    return result


def _candidates(args) -> list[str] | None:
    """The sample's elements, which narrow the absorber the energies may show."""
    from sfn_stream.core.predict import CompositionError

    try:
        return _elements(args.elements) if args.elements else None
    except CompositionError:
        return None  # the predictor says what is wrong with --elements


def _extra_edges(items: list[str], absorber: str) -> dict[str, Path]:
    """``--edge EL=FILE`` options as absorber -> file."""
    edges: dict[str, Path] = {}
    for item in items:
        element, sep, file = item.partition("=")
        element = element.strip()
        if not sep or not element or not file:
            raise CliError(f"--edge takes EL=FILE (e.g. Ti=ti_scan.xdi), got {item!r}")
        if element == absorber or element in edges:
            raise CliError(f"--edge gives the {element} edge twice")
        edges[element] = Path(file)
    return edges


def _edge_windows(edges: dict[str, Path]) -> list:
    from sfn_stream.core.spectra import SpectrumFileError, preprocess_xanes_file

    windows = []
    for element, path in edges.items():
        try:
            windows.append(preprocess_xanes_file(path, absorber=element))
        except SpectrumFileError as err:
            raise CliError(str(err)) from err
    return windows


def run_xrd(args) -> int:
    patterns = []
    for path in args.files:
        try:
            patterns.append((str(path), read_powder(path)))
        except CliError as err:
            if len(args.files) == 1:
                raise
            patterns.append((str(path), err))
    # Imported only now: it loads torch (seconds), which an unusable file should not wait for.
    from sfn_stream.core.predict import CompositionError, default_registry, element_set

    try:
        elements = element_set(args.elements) if args.elements else None
    except CompositionError as err:
        raise CliError(f"--elements: {err}") from err
    if args.bundle is not None:
        from sfn_stream.core.networks import BundleError
        from sfn_stream.core.predict import XrdPredictor

        try:
            predictor = XrdPredictor(args.bundle)
        except BundleError as err:
            raise CliError(f"--bundle: {err}") from err
    else:
        predictor = default_registry().predictor("xrd")
    results = [_predict_pattern(args, predictor, pattern, elements) for _, pattern in patterns]
    if len(results) == 1:
        return _report(args, results[0], file=patterns[0][0])
    return _report_all(args, results, [name for name, _ in patterns])


def _predict_pattern(args, predictor, pattern, elements) -> dict:
    if isinstance(pattern, Exception):
        return {"kind": "xrd", "status": "refused", "reason": str(pattern)}
    axis = args.axis or pattern.axis or "2theta"
    wavelength = args.wavelength or pattern.wavelength or 1.5406
    prediction, _ = predictor.predict_pattern(pattern.x, pattern.intensity, axis=axis, wavelength=wavelength,
                                              elements=elements)
    return prediction.plain()


def read_powder(path: Path):
    """The powder pattern of a pdCIF or column file (:class:`~sfn_stream.core.spectra.PowderFile`: x, intensity,
    the axis and wavelength the file states); a file larger than the input limit (``$SFN_MAX_INPUT_BYTES``,
    64 MiB by default) is refused unread."""
    from sfn_stream.core.spectra import SpectrumFileError, read_powder_file

    if not path.is_file():
        raise CliError(f"{path}: no such file")
    try:
        return read_powder_file(path)
    except (SpectrumFileError, ValueError) as err:
        message = str(err)  # the readers usually name the file already
        raise CliError(message if str(path) in message else f"{path}: {message}") from err


def _elements(text: str) -> list[str]:
    from sfn_stream.core.predict import parse_elements

    return parse_elements(text)[0]


def _report(args, result: dict, *, file: str) -> int:
    result = {"file": file, **result}
    usable = result["status"] in ("ok", "flagged")
    if args.json:
        print_json(result)
    else:
        _print_table(result)
    if not usable:
        print(f"sfn-stream: {file}: {result['reason']}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _report_all(args, results: list[dict], files: list[str]) -> int:
    """Several scans (files, or groups of a project): a JSON list, or a table each; exit 2 when any gave no
    prediction."""
    results = [{"file": file, **result} for file, result in zip(files, results)]
    if args.json:
        print_json(results)
    else:
        for result in results:
            if "predictions" in result:
                _print_table(result)
    failed = [r for r in results if r["status"] not in ("ok", "flagged")]
    for result in failed:
        reason = result["reason"] or ""
        print(f"sfn-stream: {reason if reason.startswith(result['file']) else result['file'] + ': ' + reason}",
              file=sys.stderr)
    return EXIT_USAGE if failed else 0


def _print_table(result: dict) -> None:
    from rich.table import Table

    out = console()
    table = Table(title=f"{Path(result['file']).name}  [{result['status']}]", title_justify="left")
    table.add_column("prediction")
    table.add_column("value", justify="right")
    table.add_column("confidence", justify="right")
    for name, value in result["predictions"].items():
        if "std" in value:
            table.add_row(name, f"{value['value']:.2f} {value['unit']}", f"± {value['std']:.2f}")
        else:
            table.add_row(name, str(value["value"]), f"{value['confidence']:.0%}")
    out.print(table)
    pre = result.get("preprocessing") or {}
    if result["kind"] == "xanes" and pre.get("e0") is not None:
        out.print(f"E0 {pre['e0']:.2f} eV (E0 - E_ref {pre['e0_shift']:+.2f} eV), edge step {pre['edge_step']:.3g}, "
                  f"calibration: {pre.get('calibration')}")
    if result["kind"] == "xrd" and pre.get("indexing"):
        out.print(_indexing_line(pre["indexing"]))
    if result["quality_flags"]:
        out.print("quality flags: " + ", ".join(result["quality_flags"]))
    mode = (result.get("inputs") or {}).get("composition")
    if mode in _NO_COMPOSITION:
        out.print(_NO_COMPOSITION[mode], style="yellow")
    out.print(f"model bundle: {result['bundle_id']}", style="dim")


_EDGES = {"cubic": "a", "tetragonal": "ac", "hexagonal": "ac", "orthorhombic": "abc"}


def _indexing_line(evidence: dict) -> str:
    """'indexing of the first 20 lines (merit: share indexed minus chance): tetragonal P 0.92 (a 4.593, c 2.959
    A; refined fit M 278), orthorhombic C 0.88, ...': the best family's cell in full, with de Wolff's M of its
    refined fit where the bundle's indexing reports one."""
    if evidence["n_lines"] < 6:
        return f"indexing: {evidence['n_lines']} lines found, too few to try cells"
    ranked = sorted(evidence["merit"].items(), key=lambda item: -item[1])
    centring, cells = evidence.get("centring", {}), evidence.get("cell_A", {})
    parts = [f"{family} {centring.get(family, '')} {merit:.2f}".replace("  ", " ") for family, merit in ranked]
    best = ranked[0][0]
    if best in cells:
        fit = (evidence.get("fit") or {}).get(best)
        m = f"; refined fit M {10 ** fit['log10_m']:.0f}" if fit else ""
        parts[0] += " (" + ", ".join(f"{name} {edge:.3f}" for name, edge in zip(_EDGES[best], cells[best])) + f" A{m})"
    return f"indexing of the first {evidence['n_lines']} lines (merit: share indexed minus chance): " + ", ".join(parts)


# What a prediction made without --elements means, by how the bundle was asked (inputs["composition"]).
_NO_COMPOSITION = {
    "unknown": "no composition given: read from the spectrum alone (--elements makes it surer)",
    "absorbers_as_elements": "no composition given: this bundle reads the absorber alone as the pure metal; "
                             "give --elements",
}
