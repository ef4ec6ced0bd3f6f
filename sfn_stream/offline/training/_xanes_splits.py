"""The one split assignment of the corpus and every XANES model: ``data/splits/xanes_3d_splits.json``.

Made by :func:`sfn_stream.offline.splits.unified_splits` from ``data/corpus`` with the shipped Cu
bundle's splits pinned (its test materials, and AMCSD materials that absorbed one of them as a
duplicate, stay in test), and the committed file itself pinned on a rebuild (a material never
changes split as the corpus grows).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sfn_stream.core import paths
from sfn_stream.offline.splits import SPLITS, UNIFIED_SPLITS_FILE, unified_splits
CHEMICAL_SYSTEM_TEST = "test_chemical_system"


def read_unified_splits(path: str | Path = UNIFIED_SPLITS_FILE) -> dict[str, list[str]]:
    """``{"train", "val", "test", "test_chemical_system"}`` -> material ids."""
    from ._xanes import TrainingDataError

    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"{path} is missing: make it with sfn-stream train xanes-3d --splits-only")
    data = json.loads(path.read_text())
    return {name: list(data[name]) for name in (*SPLITS, CHEMICAL_SYSTEM_TEST)}


def split_of(splits: Mapping[str, list[str]]) -> dict[str, str]:
    return {mid: name for name in SPLITS for mid in splits[name]}


def make_unified_splits(materials, *, previous: Mapping[str, str] | None = None, seed: int = 0) -> dict[str, Any]:
    """The assignment for ``materials`` (:class:`CorpusMaterial` list) as the JSON object to commit."""
    from ._xanes import read_splits

    cu_bundle = split_of(read_splits())  # data/splits/xanes_cu_*_ids.txt of models/xanes-specfusion
    pinned = dict(previous or {})
    duplicates = _duplicates()
    for material in materials:
        for material_id in (material.material_id, *duplicates.get(material.material_id, ())):
            if material_id in cu_bundle and material.material_id not in pinned:
                pinned[material.material_id] = cu_bundle[material_id]
    rows = [(m.material_id, m.formula, m.chemical_system, sorted(f"{a}|{m.crystal_system}" for a in m.metal_labels))
            for m in materials]
    assignment, chemical_system_test = unified_splits(rows, pinned, seed=seed)
    out: dict[str, Any] = {
        "method": "material id -> split; formula groups never span two splits (test formula-disjoint); whole "
        "chemical systems (element sets) with no pinned material go to test with probability 0.06 (seeded hash); "
        "the rest strata-balanced (absorber x crystal system) 80/10/10 (sfn_stream.offline.splits.unified_splits). "
        "Pinned: the splits of models/xanes-specfusion (data/splits/xanes_cu_*_ids.txt, also through the corpus's "
        "duplicate ids) and this file's earlier assignment.",
        "created": _dt.date.today().isoformat(),
        "seed": seed,
        "counts": dict(Counter(assignment.values())),
        "n_test_chemical_system": len(chemical_system_test),
    }
    for name in SPLITS:
        out[name] = sorted(mid for mid, split in assignment.items() if split == name)
    out[CHEMICAL_SYSTEM_TEST] = chemical_system_test
    return out


def write_unified_splits(materials, path: str | Path = UNIFIED_SPLITS_FILE) -> dict[str, Any]:
    """(Re)write the committed file, keeping every material's earlier split."""
    from sfn_stream.offline.corpus import read_splits as read_corpus_splits

    path = Path(path)
    previous = split_of(read_unified_splits(path)) if path.is_file() else None
    # materials the corpus assembly has already placed keep that place: corpus and models agree
    pinned = {**read_corpus_splits(), **(previous or {})}
    data = make_unified_splits(materials, previous=pinned)
    if previous is not None and split_of(data) == previous:  # nothing new: leave the file as it is
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return data


def _duplicates() -> dict[str, tuple[str, ...]]:
    import pandas as pd

    table = pd.read_parquet(paths.CORPUS_DIR / "materials.parquet", columns=["material_id", "duplicates"])
    return {row.material_id: tuple(row.duplicates) for row in table.itertuples(index=False)
            if row.duplicates is not None and len(row.duplicates)}
