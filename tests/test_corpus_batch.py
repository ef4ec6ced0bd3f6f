"""Offline FEFF batches: export from a tiny campaign (cuprite + the Cu references), run with
``python -m sfn_stream.offline.corpus.batch_run`` where pymatgen, scipy, Dask, tqdm and torch cannot be
imported, import into the campaign's store; refusals, a second import, the time limit.

The campaign's settings are the fast ones of test_corpus (no SCF, FMS 3 A: fcc Cu in ~15 s),
offered to the CLI as one more calibration candidate.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_corpus import FAST, _cuprite

from sfn_stream.cli import main
from sfn_stream.offline.corpus import (
    CALIBRATION_CANDIDATES,
    CampaignConfig,
    Item,
    ResultStore,
    SourceEntry,
    pending_items,
    plan_items,
    reference_materials,
    screen_entries,
)
from sfn_stream.offline.corpus._calibration import corpus_fallbacks
from sfn_stream.offline.corpus._structures import save_prepared

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("pymatgen", "scipy", "dask", "distributed", "tqdm", "torch")
RECORD_FIELDS = {"kind", "material_id", "version", "element", "site", "key", "ok", "value", "seconds", "host"}
VALUE_FIELDS = {"energy", "mu", "e0", "feff_seconds", "settings_key", "failed_attempts"}


@pytest.fixture
def campaign(tmp_path, monkeypatch):
    """A campaign folder as `dataset build` leaves it before any result: prepared cuprite, Cu only."""
    monkeypatch.setitem(CALIBRATION_CANDIDATES, "test_fast", FAST)
    workdir = tmp_path / "campaign"
    materials, _ = screen_entries([SourceEntry("amcsd", "12", "cuprite", _cuprite())])
    save_prepared(workdir / "materials.json.gz", materials, [], {"test": "cuprite"})
    config = CampaignConfig(workdir=workdir, settings=FAST, fallbacks=corpus_fallbacks(), metals=("Cu",))
    plan = plan_items(materials, reference_materials(("Cu",)), config)
    options = ["--workdir", str(workdir), "--metals", "Cu", "--settings", "test_fast"]
    return {"workdir": workdir, "config": config, "plan": plan, "options": options, "tmp": tmp_path}


def _export(campaign, name: str, sites: int, skip: int = 0) -> tuple[Path, dict]:
    out = campaign["tmp"] / name
    assert main(["dataset", "batch-export", *campaign["options"], "--sites", str(sites), "--skip", str(skip),
                 "--out", str(out)]) == 0
    with gzip.open(out, "rt") as fh:
        return out, json.load(fh)


def _blocked_path(tmp: Path) -> Path:
    """A folder whose pymatgen, scipy, ... packages fail to import (first on PYTHONPATH)."""
    folder = tmp / "blocked"
    for name in BLOCKED:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    return folder


def _batch_run(campaign, batch: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    """``python -m sfn_stream.offline.corpus.batch_run`` with the heavy packages blocked (sandboxes inherit it)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_blocked_path(campaign["tmp"])), str(ROOT)]),
           "PYTHONUNBUFFERED": "1"}
    code = ("import runpy, sys; sys.argv[0] = 'batch_run'\n"
            "try:\n    runpy.run_module('sfn_stream.offline.corpus.batch_run', run_name='__main__')\n"
            "finally:\n"
            f"    print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & set({BLOCKED!r})))")
    return subprocess.run([sys.executable, "-c", code, str(batch), "--out", str(out), *options],
                          cwd=campaign["tmp"], env=env, capture_output=True, text=True, timeout=600)


def test_export_takes_pending_feff_items_in_campaign_order_and_writes_nothing(campaign):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in campaign["workdir"].iterdir())
    _, batch = _export(campaign, "batch.json.gz", sites=2, skip=1)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in campaign["workdir"].iterdir()) == before

    feff = [i for i in pending_items(campaign["plan"], campaign["config"].store, False)[0] if i.kind == "feff"]
    assert [e["item"]["key"] for e in batch["items"]] == [i.key for i in feff[1:3]]
    assert batch["settings_key"] == FAST.key() and batch["pending_feff"] == len(feff)
    assert batch["sfn_stream_version"] and batch["created"]
    chain = [FAST, *corpus_fallbacks()]  # the order compute_feff_site tries them in
    for entry in batch["items"]:
        assert entry["timeout"] == campaign["config"].timeouts["feff"]
        assert [i["settings_key"] for i in entry["inputs"]] == [s.key() for s in chain]
        assert all(i["inp"].startswith("TITLE") and "ATOMS" in i["inp"] for i in entry["inputs"])


@pytest.mark.slow
def test_a_batch_run_without_pymatgen_is_imported_once_and_not_redone(campaign, capsys):
    batch, exported = _export(campaign, "batch.json.gz", sites=1)
    key = exported["items"][0]["item"]["key"]
    assert key.startswith("feff/metal-Cu/")  # fcc Cu: the cheapest site, first in the plan
    results = campaign["tmp"] / "results.jsonl"
    run = _batch_run(campaign, batch, results, "--workers", "2", "--time-limit", "400")
    assert run.returncode == 0, run.stderr
    assert f"{key} ok=True" in run.stdout and "1/1" in run.stdout
    assert "LOADED []" in run.stdout  # the runner imported none of the heavy packages

    (record,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert set(record) == RECORD_FIELDS and set(record["value"]) == VALUE_FIELDS  # execute()'s, plus host
    assert record["ok"] and record["key"] == key and record["value"]["settings_key"] == FAST.key()
    assert len(record["value"]["energy"]) == len(record["value"]["mu"]) > 100

    capsys.readouterr()
    assert main(["dataset", "batch-import", str(results), *campaign["options"]]) == 0
    assert "imported 1 records (1 ok, 0 failed), skipped 0" in capsys.readouterr().out
    store = campaign["config"].store
    assert store.latest()[key]["ok"]
    pending, done, _ = pending_items(campaign["plan"], store, False)  # what `dataset build` runs next
    assert done == 1 and key not in {i.key for i in pending}
    assert main(["dataset", "status", *campaign["options"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"]["feff"]["done"] == 1

    lines = store.path.read_text()
    assert main(["dataset", "batch-import", str(results), *campaign["options"]]) == 0
    assert "imported 0 records (0 ok, 0 failed), skipped 1" in capsys.readouterr().out
    assert store.path.read_text() == lines

    # a second run on the same results file has nothing left to do
    again = _batch_run(campaign, batch, results, "--workers", "1")
    assert again.returncode == 0 and len(results.read_text().splitlines()) == 1
    assert '"already_in_out": 1' in again.stdout


def _record(item: Item, settings_key: str) -> dict:
    return {**item.to_dict(), "ok": True, "seconds": 1.0, "host": "elsewhere",
            "value": {"energy": [1.0, 2.0], "mu": [0.0, 1.0], "e0": 1.5, "feff_seconds": 1.0,
                      "settings_key": settings_key, "failed_attempts": []}}


def test_records_of_other_settings_or_outside_the_plan_are_refused_and_nothing_is_written(campaign, capsys):
    good = next(i for i in campaign["plan"] if i.kind == "feff")
    other = CALIBRATION_CANDIDATES["noscf_fms4"].key()
    cases = {
        "settings key": _record(Item("feff", good.material_id, other, good.element, good.site), other),
        "not in the campaign's plan": _record(Item("feff", "amcsd-99999", FAST.key(), "Cu", 0), FAST.key()),
        "made with settings": _record(good, other),  # a value from settings outside the fallback chain
    }
    for words, bad in cases.items():
        results = campaign["tmp"] / "results.jsonl"
        results.write_text("".join(json.dumps(r) + "\n" for r in (_record(good, FAST.key()), bad)))
        assert main(["dataset", "batch-import", str(results), *campaign["options"]]) == 2
        err = capsys.readouterr().err
        assert "1 of 2 records refused, nothing imported" in err and words in err, err
        assert not campaign["config"].store.path.exists()


def test_a_time_limit_ends_the_run_without_records(campaign):
    batch, _ = _export(campaign, "batch.json.gz", sites=2)
    results = campaign["tmp"] / "results.jsonl"
    run = _batch_run(campaign, batch, results, "--workers", "2", "--time-limit", "0")
    assert run.returncode == 0, run.stderr
    assert results.read_text() == "" and '"not_started": 2' in run.stdout

    started = time.monotonic()  # FEFF on fcc Cu takes ~15 s: both items are stopped while running
    scratch = campaign["tmp"] / "node" / "scratch"  # a fresh node's scratch folder need not exist yet
    run = _batch_run(campaign, batch, results, "--workers", "2", "--time-limit", "2", "--scratch", str(scratch))
    assert run.returncode == 0, run.stderr
    assert scratch.is_dir() and not any(scratch.iterdir())  # the runs' folder made there and removed
    assert time.monotonic() - started < 12
    assert results.read_text() == "" and '"stopped_at_time_limit": 2' in run.stdout


def test_importing_a_missing_results_file_is_a_clear_error(campaign, capsys):
    assert main(["dataset", "batch-import", str(campaign["tmp"] / "none.jsonl"), *campaign["options"]]) == 2
    assert "no results file" in capsys.readouterr().err
    assert ResultStore(campaign["config"].store.path).latest() == {}
