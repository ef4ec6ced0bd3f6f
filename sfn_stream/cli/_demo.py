"""``sfn-stream demo``: the whole path on a simulated beamline, with an embedded Tiled server.

Measures the demo sample (one PXRD frame, one K-edge XANES scan), shows the predictions as
they arrive, saves a figure, and runs example queries against Tiled. Then a sample with three 3d metals,
told only its elements as at a beamline, is measured with the next-edge agent: PXRD, the edge the agent
picks, its next edges until it says done, every metal's fused prediction against the truth.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ._common import CliError, console

MARKER = ".sfn-demo"


def add_parser(sub) -> None:
    parser = sub.add_parser("demo", help="end-to-end demo on a simulated beamline (no arguments needed)")
    parser.add_argument("--out", type=Path, default=Path("sfn-demo"),
                        help="folder for the figure, the summary and the demo's Tiled data (default: sfn-demo)")
    parser.add_argument("--mono-offset", type=float, default=1.5,
                        help="simulated monochromator miscalibration in eV, corrected by the reference foil")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-agent", action="store_true", help="skip the multi-metal sample measured with the agent")
    parser.set_defaults(run=run)


def _fresh_folder(out: Path) -> Path:
    """The demo's Tiled folder, emptied if an earlier demo made it (never anything else)."""
    tiled_dir = out / "tiled"
    if tiled_dir.exists():
        if not (out / MARKER).exists():
            raise CliError(f"{out} exists and was not made by the demo; choose another --out")
        shutil.rmtree(tiled_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    return tiled_dir


def run(args) -> int:
    from bluesky import RunEngine

    from sfn_stream.simulated_beamline import load_demo_sample, powder_scan, simulated_beamline, xanes_scan
    from sfn_stream.live.catalog import TiledService
    from sfn_stream.live.consumers import NextEdgeAgent
    from sfn_stream.live.plugin import SfnPlugin, make_tiled_writer
    from ._live import LiveDisplay, ScanProgress

    out = console()
    tiled_dir = _fresh_folder(args.out)
    sample = load_demo_sample()
    out.rule(f"[bold]sfn-stream demo[/bold]: {sample.name}")
    out.print(f"Spectra simulated by this project: {sample.provenance.get('xanes', '')}; "
              f"{sample.provenance.get('xrd', '')}.", style="dim")
    with out.status("starting the embedded Tiled server and loading the models..."):
        service = TiledService(tiled_dir)
        client = service.client()
        agent = None if args.no_agent else NextEdgeAgent()
        plugin = SfnPlugin(make_tiled_writer(client), consumers=[agent] if agent else [])
        plugin.flush()
    try:
        out.print(f"Tiled: {service.uri} (data in {tiled_dir})")
        mono, xas, powder = simulated_beamline(sample, seed=args.seed, mono_offset=args.mono_offset)
        RE = RunEngine({}, call_returns_result=False)
        RE.subscribe(plugin)
        plugin.subscribe(LiveDisplay(out))
        sample_id = "demo-" + sample.formula
        out.rule("PXRD: one frame")
        (xrd_uid,) = RE(powder_scan(powder, sample=sample_id, composition=sample.formula))
        plugin.flush()
        out.rule(f"XANES: {sample.absorber} K edge, 200 points")
        with ScanProgress(out, total=200) as progress:
            token = RE.subscribe(progress)
            (xanes_uid,) = RE(xanes_scan(xas, mono, sample.absorber, composition=sample.formula, sample=sample_id))
            RE.unsubscribe(token)
        plugin.flush()
        summaries = {"xrd": plugin.summaries.get(xrd_uid), "xanes": plugin.summaries.get(xanes_uid)}
        _print_summary(out, sample, summaries)
        figure = args.out / "demo.png"
        _save_figure(figure, client, xanes_uid, xrd_uid, sample)
        out.print(f"figure saved: [bold]{figure}[/bold]")
        _run_queries(out, client, summaries)
        if agent is not None:
            summaries["agent"] = _measure_with_agent(out, RE, plugin, agent, client, args.seed, args.out / "agent.png")
        (args.out / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    finally:
        plugin.close()
        service.close()
    failed = [k for k in ("xrd", "xanes") if not summaries[k] or summaries[k].get("status") not in ("ok", "flagged")]
    if agent is not None and not summaries["agent"]["steps"]:
        failed.append("the next-edge agent")
    if failed:
        raise CliError(f"no usable prediction for: {', '.join(failed)} (see above)", status=1)
    return 0


def _print_summary(out, sample, summaries) -> None:
    from rich.table import Table

    xanes, xrd = summaries["xanes"] or {}, summaries["xrd"] or {}
    truth = sample.truth
    table = Table(title=f"{sample.name}: predictions vs the structure the spectra were simulated from",
                  title_justify="left")
    for column in ("property", "predicted", "confidence", "truth", "from"):
        table.add_column(column)
    rows = [
        ("crystal system", xrd.get("crystal_system"), _pct(xrd.get("crystal_system_confidence")),
         truth.get("crystal_system"), "PXRD"),
        (f"{sample.absorber} oxidation state", xanes.get("oxidation_state"),
         _pct(xanes.get("oxidation_state_confidence")), truth.get("oxidation_state"), "XANES"),
        (f"{sample.absorber} coordination number", xanes.get("coordination_number"),
         _pct(xanes.get("coordination_number_confidence")), truth.get("coordination_number"), "XANES"),
        ("density (g/cm3)", _num(xanes.get("density")), f"± {_num(xanes.get('density_std'))}",
         _num(truth.get("density")), "XANES"),
    ]
    for row in rows:
        table.add_row(*(str(v) if v is not None else "-" for v in row))
    out.print(table)
    for kind, summary in (("XANES", xanes), ("PXRD", xrd)):
        out.print(f"{kind}: status {summary.get('status')}, flags {summary.get('quality_flags') or 'none'}, "
                  f"bundle {summary.get('bundle_id')}", style="dim")


def _pct(value) -> str | None:
    return None if value is None else f"{value:.0%}"


def _num(value) -> str | None:
    return None if value is None else f"{value:.2f}"


def _run_queries(out, client, summaries) -> None:
    from sfn_stream.live.catalog import runs_where, samples_where

    out.rule("Tiled queries over stop.sfn.*")
    xrd, xanes = summaries["xrd"] or {}, summaries["xanes"] or {}
    queries = []
    if xrd.get("crystal_system"):
        queries.append(("runs predicted " + xrd["crystal_system"], runs_where,
                        {"crystal_system": xrd["crystal_system"]}))
    if xanes.get("species"):
        queries.append((f"runs predicted {xanes['species']}", runs_where, {"species": xanes["species"]}))
        if xrd.get("crystal_system"):
            queries.append((f"samples predicted {xrd['crystal_system']} with {xanes['species']}", samples_where,
                            {"crystal_system": xrd["crystal_system"], "species": xanes["species"]}))
    queries.append(("samples predicted cubic with Fe3+", samples_where, {"crystal_system": "cubic",
                                                                          "species": "Fe3+"}))
    for title, function, criteria in queries:
        call = ", ".join(f"{k}={v!r}" for k, v in criteria.items())
        result = function(client, **criteria)
        out.print(f"[bold]{title}[/bold]: {function.__name__}(client, {call})")
        if not result:
            out.print("  (none)")
        for key, value in result.items():
            detail = value if isinstance(value, list) else f"{value.get('kind')} run, status {value.get('status')}"
            out.print(f"  {key}: {detail}")


def _save_figure(path: Path, client, xanes_uid: str, xrd_uid: str, sample) -> None:
    """Spectrum with E0 and the model window, the pattern, and the predictions with confidence."""
    from ._figure import demo_figure

    demo_figure(path, client[xanes_uid], client[xrd_uid], sample)


def _measure_with_agent(out, RE, plugin, agent, client, seed: int, figure: Path) -> dict:
    """The shipped three-metal sample, elements only, measured edge by edge as the agent decides."""
    from sfn_stream.simulated_beamline import load_demo_agent_sample
    from sfn_stream.simulated_beamline.agent_session import format_step, measure_with_agent, predicted_labels

    from ._figure import agent_figure

    sample = load_demo_agent_sample(elements_only=True)
    name = "demo-" + sample.formula
    out.rule(f"Next-edge agent: {sample.formula}, told only its elements ({sample.composition})")
    out.print(f"{sample.provenance.get('material', sample.material_id)}.", style="dim")
    rule = agent.options.describe(agent.agent.calibration)
    confident = (f"every metal at confidence {rule['target_confidence']:g}, or " if rule["target_confidence"] <= 1
                 else "")  # above 1: the calibration stops on the bits-per-hour rule alone
    out.print(f"PXRD, then the {', '.join(sample.metals)} K edges in the order the agent picks, until it is done "
              f"({confident}no edge worth {rule['min_bits_per_hour']:g} bits per hour of beamtime; "
              f"{rule['stopping_from']})", style="dim")
    result = measure_with_agent(RE, plugin, agent, sample, name=name, seed=seed,
                                on_step=lambda step: out.print("  " + format_step(step, len(sample.metals)),
                                                               highlight=False))
    predicted = predicted_labels(agent, name)
    out.print(_agent_table(sample, result, predicted))
    pxrd_run = next((step.trigger_run for step in result.steps if step.trigger == "pxrd"), None)
    pxrd = plugin.summaries.get(pxrd_run) or {}
    if pxrd.get("crystal_system"):
        out.print(f"crystal system (PXRD): {pxrd['crystal_system']} ({_pct(pxrd.get('crystal_system_confidence'))}), "
                  f"truth {sample.truth.get('crystal_system')}")
    right, total = result.labels_right(predicted)
    out.print(f"{right}/{total} labels right: one sample, an example and not a score (`sfn-stream bench agent` "
              "measures the agent on every test-split sample)", style="dim")
    agent_figure(figure, client, result, sample, target=rule["target_confidence"])
    out.print(f"figure saved: [bold]{figure}[/bold]")
    out.print(f"[bold]the agent's decisions[/bold]: {len(result.steps)} runs in Tiled, "
              f"client.search(Key('start.sfn.kind') == 'next_edge').search(Key('start.sfn.sample') == {name!r})")
    return {**result.to_dict(), "predicted": predicted, "labels_right": right, "labels_total": total}


def _agent_table(sample, result, predicted):
    """Every metal's fused oxidation state and CN (with confidence), measured or not, beside the truth."""
    from rich.table import Table

    final = result.final
    confidence = final.metal_confidence if final else {}
    table = Table(title=f"{sample.formula}: fused predictions after {len(result.edges_measured)} of "
                        f"{len(sample.metals)} edges ({', '.join(result.edges_measured) or '-'}) vs the structure",
                  title_justify="left")
    for column in ("metal", "edge measured", "oxidation state", "truth", "CN", "truth "):
        table.add_column(column)
    truth = sample.truth.get("metals", {})
    for metal in sample.metals:
        p, t, c = predicted.get(metal, {}), truth.get(metal, {}), confidence.get(metal, {})
        table.add_row(metal, "yes" if metal in result.edges_measured else "no",
                      _with_confidence(p.get("oxidation_state"), c.get("oxidation_state")),
                      str(t.get("oxidation_state")),
                      _with_confidence(p.get("coordination_number"), c.get("coordination_number")),
                      str(t.get("coordination_number")))
    return table


def _with_confidence(label, confidence) -> str:
    if label is None:
        return "-"
    return f"{label} ({confidence:.0%})" if confidence is not None else str(label)
