"""``sfn-stream explain xanes FILE [FILE ...]``: which energy regions drive each XANES prediction (PNG + table)."""

from __future__ import annotations

import sys
from pathlib import Path

from ._common import EXIT_USAGE, CliError, console, print_json


def add_parser(sub) -> None:
    parser = sub.add_parser("explain", help="which energy regions drive a prediction (integrated gradients)")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    xanes = kinds.add_parser("xanes", help="K-edge XANES: pre-edge, edge, white line and post-edge shares per "
                                           "prediction, one PNG per file")
    xanes.add_argument("files", type=Path, nargs="+", metavar="FILE",
                       help="XDI, CSV/whitespace columns with a header, or .xy (one sample each)")
    xanes.add_argument("--absorber", help="absorbing element (default: XDI Element.symbol, else the 3d-metal K "
                                                 "edge the energies show, else the file name)")
    xanes.add_argument("--elements", help="the sample's elements (Fe,O) or formula (Fe2O3)")
    xanes.add_argument("--composition", help="the sample's formula (Fe2O3): stoichiometry for the model")
    xanes.add_argument("--edge", action="append", default=[], metavar="EL=FILE",
                       help="another K edge of the same sample, explained together (repeatable)")
    xanes.add_argument("--out", type=Path, default=Path("."), help="folder for the PNGs (default: .)")
    xanes.add_argument("--steps", type=int, default=64, help="integration steps of the path integral (default 64)")
    xanes.add_argument("--json", action="store_true", help="print JSON")
    xanes.set_defaults(run=run_xanes)


def run_xanes(args) -> int:
    if args.steps < 2:
        raise CliError(f"--steps must be at least 2, got {args.steps}")
    composition, flags = _composition(args)
    extra_edges = _extra_edges_checked(args)
    if extra_edges and composition is None:
        raise CliError("--edge needs the sample's elements: give --elements or --composition naming every absorber")
    args.out.mkdir(parents=True, exist_ok=True)
    results, failures = [], []
    for path in _progress(args.files, enabled=not args.json and len(args.files) > 1):
        try:
            results.append(_explain_file(path, args, composition, flags, extra_edges))
        except CliError as err:
            failures.append(str(err))
            print(f"sfn-stream: {err}", file=sys.stderr)
    if args.json:
        print_json(results if len(args.files) > 1 else (results[0] if results else []))
    else:
        for result in results:
            _print_table(result)
    if failures:
        raise CliError(f"{len(failures)} of {len(args.files)} file(s) could not be explained", EXIT_USAGE)
    return 0


def _composition(args) -> tuple[str | None, list[str]]:
    """What the model is told about the sample (None: nothing, only the measured edges) and the matching flags."""
    from sfn_stream.core.predict import CompositionError, parse_elements

    try:
        if args.composition:
            if "," in args.composition or " " in args.composition.strip():
                raise CliError(f"--composition takes a formula (Fe2O3), got {args.composition!r}; "
                               "give an element list with --elements")
            elements, _ = parse_elements(args.composition)
            if args.elements and set(parse_elements(args.elements)[0]) != set(elements):
                raise CliError(f"--elements {args.elements} and --composition {args.composition} name different elements")
            return args.composition, []
        if args.elements:
            parse_elements(args.elements)
            return args.elements, []
    except CompositionError as err:
        raise CliError(str(err)) from err
    return None, ["composition_unknown"]


def _extra_edges_checked(args) -> dict[str, Path]:
    from ._predict import _extra_edges

    edges = _extra_edges(args.edge, args.absorber or "")
    for element, path in edges.items():
        if not path.is_file():
            raise CliError(f"--edge {element}={path}: no such file")
    return edges


def _explain_file(path: Path, args, composition, flags, extra_edges) -> dict:
    from sfn_stream.core.predict import parse_elements
    from sfn_stream.core.spectra import SpectrumFileError, element_symbol, preprocess_xanes_file

    elements = parse_elements(composition)[0] if composition else None  # checked by _composition already
    absorber = args.absorber and element_symbol(args.absorber)
    try:
        window = preprocess_xanes_file(path, absorber=absorber, elements=elements)
    except (SpectrumFileError, ValueError) as err:
        message = str(err)
        raise CliError(message if str(path) in message else f"{path}: {message}") from err
    if not window.usable:
        raise CliError(f"{path}: {window.reason}")
    if window.absorber in extra_edges:
        raise CliError(f"{path}: --edge gives the {window.absorber} edge of the file again")
    # Imported only now: torch takes seconds, which an unusable file should not wait for.
    from sfn_stream.core.predict import PredictorError, default_registry
    from sfn_stream.core.predict.explain import explain_windows

    others, left_out = _other_windows(extra_edges)
    try:
        registry = default_registry()
        absorbers = [window.absorber, *(w.absorber for w in others)]
        if others:
            predictor = registry.predictor_for_edges("xanes", absorbers)
        else:
            predictor = registry.predictor("xanes", window.absorber, composition)
        explanation = explain_windows(predictor, [window, *others], composition, steps=args.steps)
    except (PredictorError, ValueError) as err:
        raise CliError(f"{path}: {err}") from err
    figure = args.out / f"{path.stem}_explain.png"
    from ._explain_figure import explanation_figure

    explanation_figure(figure, explanation, title=path.name)
    result = {"file": str(path), "figure": str(figure), "quality_flags": [*window.flags, *flags, *left_out],
              **explanation.to_dict()}
    return result


def _other_windows(extra_edges: dict[str, Path]):
    """The usable windows of the --edge files, and a flag for each one left out."""
    from sfn_stream.core.spectra import SpectrumFileError, preprocess_xanes_file

    windows, left_out = [], []
    for element, path in extra_edges.items():
        try:
            window = preprocess_xanes_file(path, absorber=element)
        except (SpectrumFileError, ValueError) as err:
            raise CliError(f"--edge {element}={path}: {err}") from err
        if window.usable:
            windows.append(window)
        else:
            left_out.append(f"edge_left_out:{element}")
            print(f"sfn-stream: --edge {element}={path} left out: {window.reason}", file=sys.stderr)
    return windows, left_out


def _progress(items, *, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="explain", unit="file", file=sys.stderr)


_SHORT = {"oxidation_state": "ox", "coordination_number": "CN", "density": "density"}


def _print_table(result: dict) -> None:
    from rich import box
    from rich.table import Table

    from sfn_stream.core.predict.explain import REGION_LABELS

    out = console()
    table = Table(title=f"{Path(result['file']).name}: share of |attribution| per region", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("output", "predicted", "pre", "edge", "WL", "post", "f(x)-f(b)", "gap"):
        table.add_column(name, justify="left" if name in ("output", "predicted") else "right", no_wrap=True)
    several = len(result["windows"]) > 1
    for task in result["tasks"]:
        prediction = (f"{task['f_input']:.2f}" if task["task"] == "density"
                      else f"{task['top_class']} ({task['probability']:.0%})")
        output = " ".join(filter(None, [task["element"], _SHORT.get(task["task"], task["task"])]))
        for absorber, shares in task["region_shares"].items():
            label = output + (f" [{absorber}]" if several else "")
            table.add_row(label, prediction, *(f"{shares[region]:.0%}" for region in REGION_LABELS),
                          f"{task['f_input'] - task['f_baseline']:+.3f}", f"{task['relative_gap']:.1%}"
                          if task["relative_gap"] is not None else "-")
    out.print(table)
    out.print("regions (eV from E0): pre < -5, edge -5..5, WL (white line) 5..20, post > 20; ox = oxidation state; "
              "f = log p of the predicted class (density: the mean, g/cm3); gap = completeness gap / |f(x)-f(b)|"
              + ("; [EL] = attribution to the EL edge's window" if several else ""), style="dim")
    out.print(f"baseline: {result['baseline']['description']}", style="dim")
    if result["quality_flags"]:
        out.print("quality flags: " + ", ".join(result["quality_flags"]))
    out.print(f"figure: {result['figure']}   model bundle: {result['bundle_id']}", style="dim")
