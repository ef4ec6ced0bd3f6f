"""``sfn-stream dataset build|status|info|calibrate|bench|batch-*``: the XANES + PXRD training corpus.

Options in, one call to :mod:`sfn_stream.offline.corpus` (or ``offline.evaluation.feff_throughput``), figures
out. The structure sources (AMCSD from ``larixite``, OmniXAS from ../shared) are read by the training
layer (:func:`sfn_stream.offline.training.corpus_sources`) and handed to the corpus, which stays below it.
"""

from __future__ import annotations

import os
from pathlib import Path

from sfn_stream.offline.batch_options import add_batch_run_arguments

from ._common import CliError, console, print_json

DEFAULT_WORKDIR = Path("sfn-data") / "corpus-campaign"


def add_parser(sub) -> None:
    parser = sub.add_parser("dataset", help="build and inspect the XANES + PXRD training corpus")
    which = parser.add_subparsers(dest="dataset", required=True, metavar="ACTION")

    build = which.add_parser("build", help="run (or resume) the FEFF10 + PXRD + labels campaign, write the corpus")
    _campaign_options(build)
    build.add_argument("--out", type=Path, help="corpus folder (default: data/corpus in the repository)")
    build.add_argument("--sources", default="amcsd,omnixas,matminer_mp",
                       help="structure sources, comma-separated: amcsd (larixite), omnixas and matminer_mp "
                            "(../shared; left out with a warning when it is absent). A source that a prepared "
                            "campaign lacks is screened and added to it; its materials keep their ids")
    build.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786); 'serial' runs without "
                                           "Dask; default: a local cluster")
    build.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                       help="local Dask worker processes (default: half the CPUs)")
    build.add_argument("--max-items", type=int, help="stop after this many items (a partial run)")
    build.add_argument("--max-per-metal", type=int, help="at most this many materials per metal")
    build.add_argument("--retry-failed", nargs="*", metavar="KEY",
                       help="run failed items again: all of them, or only those whose keys are given "
                            "(as results.jsonl names them, e.g. feff/mp-22515/018_Cu@f5881637c4)")
    build.add_argument("--refresh-structures", action="store_true", help="screen the sources again")
    build.add_argument("--assemble-only", action="store_true",
                       help="only write the corpus from what the campaign has finished so far")
    build.add_argument("--assemble-every", type=float, default=1800.0,
                       help="rewrite the corpus folder every this many seconds while running (default 1800)")
    build.add_argument("--seed-from", type=Path, metavar="CORPUS",
                       help="take the FEFF spectra (at the campaign's settings) and failures of this corpus "
                            "snapshot as done, so that they are not computed again (default: the --out corpus "
                            "when it exists)")
    build.add_argument("--no-seed", action="store_true", help="do not seed the campaign from a corpus snapshot")
    build.add_argument("--plan-only", action="store_true",
                       help="prepare the structures and print what would be queued (items per kind, FEFF sites "
                            "per source, metal and tier, the first pending items), then stop: nothing is run, "
                            "and the seed is taken in memory only")
    build.add_argument("--no-progress", action="store_true")
    build.add_argument("--json", action="store_true")
    build.set_defaults(run=run_build)

    status = which.add_parser("status", help="how far a campaign has got (items, materials per metal, pending "
                                             "FEFF sites per source, pace and ETA)")
    _campaign_options(status)
    status.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                        help="workers of the campaign, for the ETA before any site has a finish time "
                             "(default: half the CPUs)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=run_status)

    info = which.add_parser("info", help="counts per absorber, crystal system and label; the content hash")
    info.add_argument("path", nargs="?", type=Path, help="corpus folder (default: data/corpus)")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=run_info)

    calibrate = which.add_parser("calibrate", help="FEFF settings vs the OmniXAS Cu spectra (needs ../shared)")
    calibrate.add_argument("--candidates", help="comma-separated candidate names (default: all)")
    calibrate.add_argument("--materials", type=int, default=20, help="OmniXAS materials (default 20)")
    calibrate.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR.parent / "calibration")
    calibrate.add_argument("--timeout", type=float, default=900.0, help="seconds per FEFF run (default 900)")
    calibrate.add_argument("--report-only", action="store_true", help="only write the table from past runs")
    calibrate.add_argument("--reference-offset", type=float,
                           help="energy offset of FEFF fcc Cu at the OmniXAS settings (default: "
                                "data/labels/feff_cu_metal_e0.json when present)")
    calibrate.add_argument("--doc", type=Path, help="markdown report (default: docs/feff-calibration.md)")
    calibrate.add_argument("--notes", type=Path, help="a markdown file appended to the report (observations)")
    calibrate.add_argument("--json", action="store_true")
    calibrate.set_defaults(run=run_calibrate)

    export = which.add_parser("batch-export", help="pending FEFF items of a campaign as an offline batch "
                                                   "(feff.inp rendered here), for a machine without Dask or pymatgen")
    _campaign_options(export)
    export.add_argument("--sites", type=int, required=True, help="FEFF items in the batch")
    export.add_argument("--skip", type=int, default=0,
                        help="leave out the first this many pending FEFF items (the local campaign's next ones)")
    export.add_argument("--retry-failed", nargs="*", metavar="KEY",
                        help="count failed items (all, or those whose keys are given) as pending, as build does")
    export.add_argument("--out", type=Path, required=True, help="batch file (.json.gz)")
    export.add_argument("--json", action="store_true")
    export.set_defaults(run=run_batch_export)

    batch_run = which.add_parser("batch-run", help="run an offline FEFF batch (needs only numpy and feff10)")
    add_batch_run_arguments(batch_run)  # the same options as `python -m sfn_stream.offline.corpus.batch_run`
    batch_run.set_defaults(run=run_batch_run)

    batch_import = which.add_parser("batch-import", help="append an offline batch's results to the campaign")
    batch_import.add_argument("results", type=Path, help="results file from batch-run (.jsonl)")
    _campaign_options(batch_import)
    batch_import.add_argument("--json", action="store_true")
    batch_import.set_defaults(run=run_batch_import)

    audit = which.add_parser("audit", help="label audit: oxidation states and CNs checked by a second method, "
                                           "the disagreements written to data/corpus_audit/label_audit.csv")
    audit.add_argument("path", nargs="?", type=Path, help="corpus folder (default: data/corpus)")
    audit.add_argument("--table", type=Path, help="findings table (default: data/corpus_audit/label_audit.csv)")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(run=run_audit)

    teachers = which.add_parser("teacher-audit", help="teacher labels against DFT (matminer_mp, ../shared) and "
                                                      "measured gaps and magnetism (data/corpus_audit)")
    teachers.add_argument("path", nargs="?", type=Path, help="corpus folder (default: data/corpus)")
    teachers.add_argument("--experiment", type=Path, help="measured-properties table (default: "
                                                          "data/corpus_audit/experimental_properties.csv)")
    teachers.add_argument("--json", action="store_true")
    teachers.add_argument("--write-card", type=Path, metavar="BUNDLE",
                          help="also write the measured label errors into this bundle's card.json (label_quality)")
    teachers.set_defaults(run=run_teacher_audit)

    bench = which.add_parser("bench", help="campaign throughput: seconds per site, 1 vs 2 Dask workers")
    bench.add_argument("--sites", type=int, default=8, help="FEFF sites per configuration (default 8)")
    bench.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    bench.add_argument("--settings", help="FEFF settings: a calibration candidate name (default: the chosen one)")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(run=run_bench)


def _campaign_options(parser) -> None:
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help=f"campaign folder: prepared structures, results.jsonl (default {DEFAULT_WORKDIR})")
    parser.add_argument("--metals", help="comma-separated absorbers (default Ti..Zn)")
    parser.add_argument("--settings", help="FEFF settings: a calibration candidate name (default: the chosen one)")
    parser.add_argument("--timeout", type=float, help="seconds per FEFF site (default 1200)")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of the worker sandboxes (and of their sessions under Linux autogroup "
                             "scheduling, so that the campaign yields the CPUs to other work)")
    parser.add_argument("--no-fallback", action="store_true",
                        help="do not retry a failed FEFF site with the fallback settings")
    parser.add_argument("--kinds", help="item kinds to run, comma-separated (default: feff,labels,sticks,teacher)")
    parser.add_argument("--no-held-out-first", action="store_true",
                        help="after the target tiers, do not put the remaining materials of the evaluation splits "
                             "(val, test of data/splits/xanes_3d_splits.json) before the others")


def _config(args):
    from sfn_stream.offline.corpus import (
        CALIBRATION_CANDIDATES,
        CORPUS_METALS,
        CampaignConfig,
        corpus_fallbacks,
        corpus_settings,
        load_order_classes,
    )

    if args.settings:
        if args.settings not in CALIBRATION_CANDIDATES:
            raise CliError(f"unknown --settings {args.settings!r}; choose one of {', '.join(CALIBRATION_CANDIDATES)}")
        settings = CALIBRATION_CANDIDATES[args.settings]
    else:
        settings = corpus_settings()
    metals = tuple(CORPUS_METALS)
    if args.metals:
        metals = tuple(m.strip().capitalize() for m in args.metals.split(",") if m.strip())
        unknown = [m for m in metals if m not in CORPUS_METALS]
        if unknown:
            raise CliError(f"--metals: {', '.join(unknown)} not among {', '.join(CORPUS_METALS)}")
    fallbacks = tuple(f for f in corpus_fallbacks() if f != settings)
    if getattr(args, "no_fallback", False):
        fallbacks = ()
    config = CampaignConfig(workdir=Path(args.workdir), settings=settings, fallbacks=fallbacks, metals=metals,
                            nice=args.nice)
    if args.kinds:
        from sfn_stream.offline.corpus import ITEM_KINDS

        kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
        if not kinds or set(kinds) - set(ITEM_KINDS):
            raise CliError(f"--kinds: choose from {', '.join(ITEM_KINDS)}")
        config.kinds = kinds
    if args.timeout:
        config.timeouts["feff"] = args.timeout
    # the classes the last build's order was made with, so that status and batch-export see its order
    # (build itself takes them afresh from the labels finished so far)
    config.classes = load_order_classes(config.workdir)
    if not getattr(args, "no_held_out_first", False):
        config.held_out = held_out_materials()
    return config


def held_out_materials() -> frozenset[str]:
    """Material ids of the shared evaluation splits (empty without the split file)."""
    from sfn_stream.offline.splits import pinned_splits

    return frozenset(mid for mid, split in pinned_splits().items() if split in ("val", "test"))


def run_build(args) -> int:
    from sfn_stream.offline.corpus import (
        CORPUS_DIR,
        CampaignMissing,
        LabelsPending,
        MaterialsMissing,
        SeedError,
        SnapshotMissing,
        run_corpus_build,
    )

    config = _config(args)
    config.max_materials_per_metal = args.max_per_metal
    config.retry_failed = retry_option(args.retry_failed)
    out_dir = args.out or CORPUS_DIR
    entries = described = None
    if args.plan_only and args.assemble_only:
        raise CliError("--plan-only and --assemble-only exclude each other")
    if not args.assemble_only:
        if args.workers < 1:
            raise CliError("--workers must be at least 1")
        entries, described = _sources(args.sources)
    if args.plan_only:
        return _plan_only(args, config, out_dir, entries, described)
    try:
        build = run_corpus_build(
            config, out_dir, entries, described, seed_from=args.seed_from, seed=not args.no_seed,
            assemble_only=args.assemble_only, scheduler=args.scheduler, n_workers=args.workers,
            max_items=args.max_items, assemble_every=args.assemble_every,
            refresh_structures=args.refresh_structures, progress=not args.no_progress,
            log=None if args.json else console().print,
        )
    except SnapshotMissing as err:
        raise CliError(f"--seed-from {err}") from err
    except SeedError as err:
        raise CliError(f"{err}; use --no-seed to build without it") from err
    except (CampaignMissing, LabelsPending, MaterialsMissing) as err:
        raise CliError(str(err)) from err
    if build.summary is None:
        _print_manifest(build.manifest, out_dir, args.json)
        return 0
    summary = build.summary
    if args.json:
        print_json({"campaign": summary.to_dict(), "seeded": build.seeded, "corpus": build.manifest})
        return 0
    out = console()
    out.print(f"campaign: {summary.ran} items run ({summary.succeeded} ok, {summary.failed} failed) in "
              f"{summary.seconds:.0f} s on {summary.workers} worker(s); {summary.already_done} were done before, "
              f"{summary.skipped_failed} failed before (--retry-failed runs them)")
    _print_manifest(build.manifest, out_dir, False)
    return 0


def _sources(text: str):
    """Source name -> callable giving its entries, and the sources' description for the manifest: one
    callable per source, so that a source a prepared campaign lacks can be added to it alone."""
    from sfn_stream.offline.corpus import (
        MATMINER_DESCRIPTION,
        MATMINER_SOURCE,
        matminer_entries,
    )
    from sfn_stream.offline.shared import have_shared
    from sfn_stream.offline.training import corpus_sources

    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise CliError("--sources: name at least one source")
    warn = lambda line: console().print(f"[yellow]{line}[/yellow]")
    entries, described = {}, {}
    for name in names:
        if name == MATMINER_SOURCE:
            if have_shared():
                entries[name], described[name] = matminer_entries, MATMINER_DESCRIPTION
            else:
                warn("../shared is absent: the matminer_mp part is left out")
            continue
        try:
            one, about = corpus_sources([name], warn=warn)
        except ValueError as err:
            raise CliError(f"--sources: {err} or {MATMINER_SOURCE}") from err
        if about:
            entries[name], described[name] = one, about[name]
    return entries, described


def _plan_only(args, config, out_dir, entries, described) -> int:
    """``build --plan-only``: the prepared structures and the seed (in memory), then the plan's counts."""
    from sfn_stream.offline.corpus import (
        MANIFEST,
        SeedError,
        label_classes,
        plan_summary,
        prepared_materials,
        reference_materials,
        seed_records,
    )

    materials, _, _ = prepared_materials(config.workdir, entries, described, args.refresh_structures,
                                         progress=not args.no_progress)
    latest = config.store.latest()
    seed_from = args.seed_from or out_dir
    seed = None
    if not args.no_seed and (Path(seed_from) / MANIFEST).is_file():
        try:
            records = list(seed_records(seed_from, config.settings.key()))
        except SeedError as err:
            raise CliError(f"{err}; use --no-seed to plan without it") from err
        seed = _seed_check(records, latest, materials, seed_from)
        latest = {**{r["key"]: r for r in records}, **latest}
    elif args.seed_from:
        raise CliError(f"--seed-from {args.seed_from}: no corpus there (no {MANIFEST})")
    config.classes = label_classes(latest.values())  # as build would order them now
    summary = plan_summary(materials, reference_materials(config.metals), config, latest)
    summary["seed"] = seed
    if args.json:
        print_json(summary)
        return 0
    out = console()
    out.print(f"{config.workdir}: {summary['planned']} items planned, {summary['done']} done, "
              f"{summary['failed_not_retried']} failed before, {summary['pending']} pending")
    out.print("materials per source: " + _counts(summary["materials_per_source"]))
    for tier, counts in summary["tier_materials"].items():
        out.print(f"  tier {tier}: " + _counts(counts))
    out.print("pending items per kind: " + _counts(summary["pending_per_kind"]))
    for what in ("source", "metal", "tier"):
        out.print(f"pending FEFF sites per {what}: " + _counts(summary[f"pending_feff_per_{what}"]))
    if seed is not None:
        out.print(f"seed {seed['corpus']}: {seed['corpus_materials']} corpus materials, "
                  f"{seed['corpus_materials_in_campaign']} in the campaign; {seed['seeded_edges']} FEFF10 spectra, "
                  f"{seed['seeded_edges_matching']} with the campaign's sites")
    out.print("first pending: " + ", ".join(summary["first_pending"]))
    return 0


def _seed_check(records, latest, materials, corpus) -> dict:
    """Do the snapshot's materials stay in the campaign, and do its spectra cover their sites?"""
    import pyarrow.parquet as pq

    by_id = {m.material_id: m for m in materials}
    ids = pq.read_table(Path(corpus) / "materials.parquet", columns=["material_id"]).column(0).to_pylist()
    spectra = [r for r in records if r["ok"]]
    matching = [r for r in spectra if r["material_id"] in by_id and r["element"] in by_id[r["material_id"]].site_groups
                and [g[0] for g in by_id[r["material_id"]].site_groups[r["element"]]] == r["value"]["site_indices"]]
    missing = sorted(set(ids) - set(by_id))
    return {"corpus": str(corpus), "corpus_materials": len(ids), "corpus_materials_in_campaign": len(ids) - len(missing),
            "missing": missing[:20], "seeded_edges": len(spectra), "seeded_edges_matching": len(matching),
            "new_seed_records": sum(r["key"] not in latest for r in records)}


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _print_manifest(manifest: dict, out_dir, as_json: bool) -> None:
    if as_json:
        print_json(manifest)
        return
    out = console()
    out.print(f"corpus {out_dir}: {manifest['n_materials']} materials, hash {manifest['content_hash'][:16]}")
    out.print("spectra per absorber: " + ", ".join(f"{k} {v}" for k, v in manifest["materials_per_absorber"].items()))


def run_status(args) -> int:
    from sfn_stream.offline.corpus import campaign_status, reference_materials

    config = _config(args)
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    status = campaign_status(_campaign_materials(config), reference_materials(config.metals), config,
                             workers=args.workers)
    if args.json:
        print_json(status)
        return 0
    out = console()
    out.print(f"{status['workdir']}: {status['settings']} (key {status['settings_key']})")
    for kind, counts in status["items"].items():
        out.print(f"  {kind:8s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    out.print("  materials with FEFF spectra: " + ", ".join(
        f"{k} {v}" for k, v in status["materials_with_feff_spectra"].items()))
    out.print(f"  multi-metal materials with every edge computed here: {status['multi_metal_with_all_edges']} "
              f"(target {status['targets']['multi_edge']}; per metal {status['targets']['per_metal']})")
    out.print("  pending FEFF sites per source: " + _counts(status["pending_feff_per_source"]))
    out.print("  pending FEFF sites per tier: " + _counts(status["pending_feff_per_tier"]))
    out.print(f"  FEFF sites done {status['feff_sites_done']}, median {status['feff_seconds_per_site_median']} s/site; "
              f"last result {status['last_result_age_s']} s ago")
    if status["feff_sites_per_hour"]:
        out.print(f"  pace {status['feff_sites_per_hour']} sites/hour ({status['pace_from']}): ETA "
                  f"{status['eta_hours_targets']} h to the end of the target tiers, {status['eta_hours_all']} h for all")
    return 0


def _campaign_materials(config):
    from sfn_stream.offline.corpus import CampaignMissing, campaign_materials

    try:
        return campaign_materials(config)
    except CampaignMissing as err:
        raise CliError(str(err)) from err


def _campaign_plan(config):
    """The prepared materials, the reference solids and the plan of the campaign in ``config.workdir``."""
    from sfn_stream.offline.corpus import plan_items, reference_materials

    materials = _campaign_materials(config)
    references = reference_materials(config.metals)
    return materials, references, plan_items(materials, references, config)


def run_batch_export(args) -> int:
    from sfn_stream.offline.corpus import export_batch, write_batch

    if args.sites < 1 or args.skip < 0:
        raise CliError("--sites must be at least 1 and --skip at least 0")
    config = _config(args)
    config.retry_failed = retry_option(args.retry_failed)
    materials, references, _ = _campaign_plan(config)
    batch = export_batch(materials, references, config, args.sites, args.skip)
    write_batch(batch, args.out)
    summary = {"out": str(args.out), "items": len(batch["items"]), "pending_feff": batch["pending_feff"],
               "skip": args.skip, "settings_key": batch["settings_key"], "bytes": args.out.stat().st_size}
    if args.json:
        print_json(summary)
        return 0
    console().print(f"{args.out}: {summary['items']} FEFF items (pending {summary['pending_feff']}, the first "
                    f"{args.skip} left to the campaign), settings key {summary['settings_key']}, "
                    f"{summary['bytes'] / 2**20:.1f} MiB")
    return 0


def run_batch_run(args) -> int:
    from sfn_stream.offline.corpus.batch_run import run

    try:
        run(args)
    except ValueError as err:
        raise CliError(str(err)) from err
    return 0


def run_batch_import(args) -> int:
    from sfn_stream.offline.corpus import BatchError, import_results, read_records

    if not args.results.is_file():
        raise CliError(f"no results file {args.results}")
    config = _config(args)
    _, _, plan = _campaign_plan(config)
    try:
        counts = import_results(read_records(args.results), plan, config)
    except BatchError as err:
        raise CliError(str(err)) from err
    if args.json:
        print_json(counts)
        return 0
    console().print(f"{config.store.path}: imported {counts['imported']} records ({counts['ok']} ok, "
                    f"{counts['failed']} failed), skipped {counts['skipped']} already done")
    return 0


def run_info(args) -> int:
    from sfn_stream.offline.corpus import CORPUS_DIR, CorpusMissing, corpus_info

    path = args.path or CORPUS_DIR
    try:
        info = corpus_info(path)
    except CorpusMissing as err:
        raise CliError(str(err)) from err
    if args.json:
        print_json(info)
        return 0
    from rich.table import Table

    out = console()
    out.print(f"[bold]{info['path']}[/bold]  hash {info['content_hash']}  "
              f"({'verified' if info['hash_verified'] else '[red]files changed since the manifest[/red]'})")
    out.print(f"FEFF10 settings: {info['feff_settings']} (key {info['feff_settings_key']})")
    out.print(f"{info['n_materials']} materials " + str(info["materials_per_source"]) + f", {info['n_sticks']} "
              f"stick patterns, splits {info['splits']}")
    out.print(f"{info['materials_with_feff10']} materials with FEFF10 spectra here ({info['n_absorber_spectra']} "
              "absorber spectra in all, OmniXAS Cu included)")
    table = Table("absorber", "materials with spectrum", "FEFF10 here", "AMCSD")
    for element, count in info["materials_per_absorber"].items():
        table.add_row(element, str(count), str(info["materials_per_absorber_feff10"][element]),
                      str(info["amcsd_materials_per_absorber"][element]))
    out.print(table)
    out.print(f"every 3d-metal edge computed: {info['materials_with_all_edges']} materials; of the "
              f"{info['multi_metal_materials']} with two or more 3d metals, {info['multi_metal_with_all_edges']} "
              f"({info['multi_metal_with_all_edges_feff10']} all from FEFF10 here)")
    out.print("crystal systems: " + ", ".join(f"{k} {v}" for k, v in sorted(info["materials_per_crystal_system"].items())))
    out.print("labels present: " + ", ".join(f"{k} {v}" for k, v in info["label_coverage"].items()))
    out.print("rejected structures: " + ", ".join(f"{k} {v}" for k, v in info["rejections"].items()))
    return 0


def run_calibrate(args) -> int:
    from sfn_stream.offline.corpus import (
        CALIBRATION_CANDIDATES,
        calibrate_corpus_settings,
    )
    from sfn_stream.offline.shared import SharedDataMissing

    names = [n.strip() for n in args.candidates.split(",")] if args.candidates else list(CALIBRATION_CANDIDATES)
    unknown = [n for n in names if n not in CALIBRATION_CANDIDATES]
    if unknown:
        raise CliError(f"unknown candidates {unknown}; choose from {', '.join(CALIBRATION_CANDIDATES)}")
    try:
        report = calibrate_corpus_settings(
            {n: CALIBRATION_CANDIDATES[n] for n in names}, args.workdir, n_materials=args.materials,
            timeout=args.timeout, report_only=args.report_only, reference_offset=args.reference_offset,
            doc=args.doc, notes=args.notes.read_text() if args.notes else "",
            log=lambda line: console().print(line),
        )
    except SharedDataMissing as err:
        raise CliError(f"the calibration needs ../shared: {err}") from err
    if report.no_choice:
        console().print(f"[yellow]{report.no_choice}[/yellow]")
    if args.json:
        print_json({"chosen": report.chosen, "table": report.table})
        return 0
    for row in report.table:
        console().print(f"{row['candidate']:12s} median r {row['median_r']:.4f} ({row['n_sites']} sites, "
                        f"{row['n_failed']} failed), {row['median_seconds']:.1f} s/site")
    console().print(f"chosen: {report.chosen}; report: {report.doc}")
    return 0


def run_bench(args) -> int:
    """Same FEFF sites, run by a local Dask cluster of each size in turn, in one process."""
    from sfn_stream.offline.corpus import CALIBRATION_CANDIDATES, corpus_settings
    from sfn_stream.offline.evaluation.feff_throughput import (
        ThroughputError,
        campaign_throughput,
    )

    try:
        worker_counts = [int(w) for w in args.workers.split(",")]
    except ValueError as err:
        raise CliError(f"--workers must be comma-separated integers, got {args.workers!r}") from err
    if args.sites < 1 or min(worker_counts) < 1:
        raise CliError("--sites and every worker count must be at least 1")
    if args.settings and args.settings not in CALIBRATION_CANDIDATES:
        raise CliError(f"unknown --settings {args.settings!r}; choose one of {', '.join(CALIBRATION_CANDIDATES)}")
    settings = CALIBRATION_CANDIDATES[args.settings] if args.settings else corpus_settings()
    try:
        payload = campaign_throughput(args.sites, worker_counts, settings)
    except ThroughputError as err:
        raise CliError(str(err)) from err
    if args.json:
        print_json(payload)
        return 0
    out = console()
    out.print(f"FEFF10 {payload['settings']}; {payload['cpus']} CPUs, load average {payload['load_average']}")
    for r in payload["runs"]:
        out.print(f"{r['workers']} worker(s): {r['sites']} sites, s/site median {r['seconds_per_site_median']:.1f} "
                  f"(IQR {r['seconds_per_site_q1']:.1f}-{r['seconds_per_site_q3']:.1f}, range "
                  f"{r['seconds_per_site_min']:.1f}-{r['seconds_per_site_max']:.1f}); wall {r['wall_seconds']:.0f} s, "
                  f"{r['sites_per_hour']:.0f} sites/hour")
    return 0


def run_audit(args) -> int:
    from sfn_stream.offline.corpus import (
        AUDIT_DIR,
        AUDIT_RULES,
        AUDIT_TABLE,
        CORPUS_DIR,
        CorpusMissing,
        audit_corpus,
        read_manifest,
        write_findings,
    )

    path = args.path or CORPUS_DIR
    try:
        read_manifest(path)
    except CorpusMissing as err:
        raise CliError(str(err)) from err
    result = audit_corpus(path, progress=not args.json)
    table = args.table or AUDIT_DIR / AUDIT_TABLE
    write_findings(result["findings"], table)
    summary = {**result["summary"], "table": str(table),
               "changed": [f"{f.material_id} {f.formula} {f.element} {f.label}: {f.value} -> {f.kept} ({f.rule})"
                           for f in result["findings"] if f.changed]}
    if args.json:
        print_json(summary)
        return 0
    out = console()
    out.print(f"[bold]{summary['audited']}[/bold] of {summary['materials']} materials audited "
              f"({summary['structures_missing']} without a structure here, {summary['site_mismatch']} whose "
              f"structure here has other sites); {summary['findings']} findings written to {table}")
    out.print(f"changed: {summary['changed_oxidation_states']} oxidation states, "
              f"{summary['changed_coordination_numbers']} CNs ({summary['changed_rows']} absorber rows)")
    for key, count in summary["per_rule"].items():
        label, rule = key.split(":")
        out.print(f"  {label:<20} {rule:<21} {count:>5} findings, {summary['changed_per_rule'].get(key, 0):>4} "
                  f"changed  [dim]{AUDIT_RULES[rule]}[/dim]")
    return 0


def _write_label_quality(bundle: Path, result: dict) -> None:
    """The teacher labels' measured errors as the card's ``label_quality`` (the bundle's weights are untouched)."""
    import json

    from sfn_stream.offline.corpus import label_quality

    card_path = Path(bundle) / "card.json"
    if not card_path.is_file():
        raise CliError(f"no model card at {card_path}")
    card = json.loads(card_path.read_text())
    card["label_quality"] = label_quality(result)
    card_path.write_text(json.dumps(card, indent=1) + "\n")


def run_teacher_audit(args) -> int:
    from sfn_stream.offline.corpus import (
        CORPUS_DIR,
        EXPERIMENT_TABLE,
        CorpusMissing,
        TeacherUnavailable,
        read_manifest,
        teacher_audit,
    )

    path, table = args.path or CORPUS_DIR, args.experiment or EXPERIMENT_TABLE
    if not Path(table).is_file():
        raise CliError(f"no measured-properties table at {table}")
    try:
        read_manifest(path)
        result = teacher_audit(path, table, progress=not args.json)
    except (CorpusMissing, TeacherUnavailable) as err:
        raise CliError(str(err)) from err
    if args.write_card:
        _write_label_quality(args.write_card, result)
    if args.json:
        print_json(result)
        return 0
    from rich.table import Table

    out, dft, exp = console(), result["dft_corpus"], result["experiment"]
    grid = Table("property", "source", "n", "teacher", "gated (option)")
    if dft is None:
        out.print("[yellow]../shared is absent: no DFT comparison[/yellow]")
    else:
        out.print(f"DFT (matminer_mp, in-sample for the teachers): {dft['matched']} corpus materials matched "
                  f"({dft['matched_by_id']} by mp-id, {dft['matched_by_structure']} by structure)")
        grid.add_row("formation energy MAE (eV/atom)", "DFT", str(dft["formation_energy_n"]),
                     _fmt(dft["formation_energy_mae_ev_atom"]), "")
        grid.add_row("band gap MAE (eV), DFT non-metals", "DFT", str(dft["band_gap_n"]), _fmt(dft["band_gap_mae_ev"]), "")
        grid.add_row("called non-metal, DFT non-metals", "DFT", str(dft["nonmetal_n"]),
                     _fmt(dft["nonmetal_accuracy"]), _fmt(dft["nonmetal_accuracy_gated"]))
    grid.add_row("band gap MAE (eV), all with a gap", "experiment", str(exp["band_gap_n"]),
                 _fmt(exp["band_gap_mae_ev"]), "")
    grid.add_row("band gap MAE (eV), non-metals", "experiment", str(exp["band_gap_nonmetals_n"]),
                 _fmt(exp["band_gap_mae_nonmetals_ev"]), "")
    grid.add_row("is-metal accuracy", "experiment", str(exp["is_metal_n"]), _fmt(exp["is_metal_accuracy"]),
                 _fmt(exp["is_metal_accuracy_gated"]))
    grid.add_row("is-magnetic (local moment) accuracy", "experiment", str(exp["is_magnetic_n"]),
                 _fmt(exp["is_magnetic_accuracy"]), _fmt(exp["is_magnetic_accuracy_open_shell_rule"]))
    out.print(grid)
    out.print(f"gated (options, not applied to the labels): is-metal: {result['gate']}; is-magnetic: ionic "
              "compound with an open-shell 3d cation -> local moment")
    return 0


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def retry_option(values: list[str] | None) -> bool | frozenset[str]:
    """``--retry-failed`` absent: False; given alone: True (every failed item); with keys: those items only."""
    if values is None:
        return False
    return frozenset(values) if values else True
