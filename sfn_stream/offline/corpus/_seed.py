"""Seed a campaign from a corpus snapshot, so that a fresh machine grows the corpus instead of redoing it.

A corpus folder keeps each material's FEFF spectrum (the multiplicity-weighted average of its sites)
but not the site spectra, and a campaign's ``results.jsonl`` stays on the machine that ran it. On a
new machine, or on a facility's cluster that starts from the committed corpus, the campaign would
otherwise compute every site again (hundreds of CPU hours at the corpus settings). Seeding writes
one ``feff_material`` record per (material, metal) spectrum of the snapshot, for the campaign's own
FEFF settings only, and one failed record per recorded failure (not retried unless asked, as on
resume). The campaign counts the FEFF sites a seeded spectrum covers as done; assembly uses the
seeded spectrum where the site results are incomplete. Labels, stick patterns and teacher labels
are not seeded: they are cheap and are recomputed by the campaign's own code.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path
from typing import Any, Iterator, Mapping

from ._items import SEED_KIND


class SeedError(ValueError):
    """The snapshot cannot seed a campaign (its files do not match its manifest)."""


def seed_key(material_id: str, element: str, settings_key: str) -> str:
    return f"{SEED_KIND}/{material_id}/{element}@{settings_key}"


def seeded_sites(latest: Mapping[str, dict], settings_key: str) -> dict[tuple[str, str], set[int]]:
    """(material, metal) -> representative site indices covered by a seeded spectrum of these settings."""
    return {(r["material_id"], r["element"]): set(r["value"]["site_indices"]) for r in latest.values()
            if r.get("kind") == SEED_KIND and r.get("ok") and r.get("version") == settings_key}


def seed_records(corpus_dir: str | Path, settings_key: str) -> Iterator[dict[str, Any]]:
    """The snapshot's FEFF spectra at ``settings_key`` and its failed items, as campaign records."""
    import pyarrow.parquet as pq

    from ._product import read_manifest, verify_corpus  # _product reads seeded records: import here

    corpus_dir = Path(corpus_dir)
    check = verify_corpus(corpus_dir)
    if not check["ok"]:
        raise SeedError(f"{corpus_dir}: files changed since its manifest ({', '.join(check['changed']) or 'hash'});"
                        " refusing to seed a campaign from it")
    origin = {"corpus": str(corpus_dir), "content_hash": read_manifest(corpus_dir)["content_hash"]}
    rows = pq.read_table(corpus_dir / "absorbers.parquet").to_pylist()
    for row in rows:
        if row["spectrum_source"] != "feff10" or row["settings_key"] != settings_key:
            continue
        value = {name: row[name] for name in ("energy", "mu", "e0", "site_indices", "multiplicities",
                                              "feff_seconds", "fallback_sites")}
        yield {"kind": SEED_KIND, "material_id": row["material_id"], "version": settings_key,
               "element": row["element"], "site": None,
               "key": seed_key(row["material_id"], row["element"], settings_key),
               "ok": True, "value": value, "seconds": 0.0, "seeded_from": origin}
    yield from _failure_records(corpus_dir / "failures.csv.gz", origin)


def _failure_records(path: Path, origin: dict) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with gzip.open(path, "rt", newline="") as fh:
        for row in csv.DictReader(fh):
            yield {"kind": row["kind"], "material_id": row["material_id"], "version": row["key"].rsplit("@", 1)[1],
                   "element": row["element"] or None, "site": int(row["site"]) if row["site"] else None,
                   "key": row["key"], "ok": False, "error": row["error"],
                   "seconds": float(row["seconds"]) if row["seconds"] else None, "seeded_from": origin}


def _sites_done(seed: dict, latest: Mapping[str, dict]) -> bool:
    from ._items import Item

    return all(latest.get(Item("feff", seed["material_id"], seed["version"], seed["element"], site).key, {}).get("ok")
               for site in seed["value"]["site_indices"])


def seed_campaign(store, corpus_dir: str | Path, settings_key: str) -> dict[str, Any]:
    """Append the snapshot's records that ``store`` lacks; returns what was added.

    Idempotent: a key already in the store (seeded before, or computed here) is left as it is, and so
    is a spectrum whose sites all have results here (a snapshot this campaign wrote itself).
    """
    latest = store.latest()
    added = {"spectra": 0, "failures": 0, "already_present": 0}
    for record in seed_records(corpus_dir, settings_key):
        if record["key"] in latest or (record["ok"] and _sites_done(record, latest)):
            added["already_present"] += 1
            continue
        store.append(record)
        added["spectra" if record["ok"] else "failures"] += 1
    return {**added, "corpus": str(corpus_dir), "settings_key": settings_key}
