"""OmniXAS Cu data: material spectra (site-averaged) and the derived label table.

Materials Project reports one XANES per material: the site spectra of symmetry-inequivalent absorbers,
interpolated onto a common grid and averaged with multiplicity weights (pymatgen
``site_weighted_spectrum``; Mathew et al., Sci. Data 5, 180151 (2018)). We do the same with the
OmniXAS FEFF 9.9.1 site spectra (the corpus's :func:`~sfn_stream.offline.corpus.average_site_spectra`),
keeping the native FEFF energy grid.
"""

from __future__ import annotations

import csv
import gzip
import signal
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from sfn_stream.core import paths
from sfn_stream.core.chemistry import SYMPREC, equivalent_sites, structure_labels
from sfn_stream.offline.corpus import IncompleteSpectrum, average_site_spectra
from sfn_stream.offline.shared import omnixas_poscars, omnixas_site_spectra

ABSORBER = "Cu"
LABELS_FILE = paths.LABELS_DIR / "omnixas_cu_labels.csv.gz"

LABEL_COLUMNS = (
    "material_id",
    "formula",
    "elements",
    "cu_oxidation_class",
    "cu_oxidation_mean",
    "cu_oxidation_method",
    "cu_cn_class",
    "cu_cn_mean",
    "cu_cn_mixed",
    "cu_site_cns",
    "cu_n_sites",
    "density",
    "crystal_system",
    "space_group_symbol",
    "space_group_number",
    "status",
)


@dataclass(frozen=True)
class MaterialSpectrum:
    material_id: str
    energy: np.ndarray  # FEFF's absolute scale (eV), native grid
    mu: np.ndarray
    weights: tuple[int, ...]  # multiplicity of each inequivalent site group averaged
    site_keys: tuple[tuple[str, ...], ...]  # spectra used per group

    def to_dict(self) -> dict:
        return {
            "material_id": self.material_id,
            "energy": self.energy.tolist(),
            "mu": self.mu.tolist(),
            "weights": list(self.weights),
            "site_keys": [list(keys) for keys in self.site_keys],
        }


def site_key(material_id: str, index: int, element: str = ABSORBER) -> str:
    return f"{material_id}/{index:03d}_{element}"


def material_spectrum(material_id: str, structure=None, symprec: float = SYMPREC) -> MaterialSpectrum:
    """The site-averaged Cu spectrum of one OmniXAS material."""
    if structure is None:
        from pymatgen.core import Structure

        structure = Structure.from_str(omnixas_poscars()[material_id], fmt="poscar")
    spectra = omnixas_site_spectra()
    groups = equivalent_sites(structure, ABSORBER, symprec)
    site_spectra = {}
    for group in groups:
        for index in group:
            entry = spectra.get(site_key(material_id, index))
            if entry is not None:
                site_spectra[index] = (np.asarray(entry["energy"], float), np.asarray(entry["mu"], float))
    try:
        grid, mu, weights, used = average_site_spectra(groups, site_spectra)
    except IncompleteSpectrum as err:
        raise IncompleteSpectrum(f"{material_id}: {err}") from None
    keys = tuple(tuple(site_key(material_id, i) for i in present) for present in used)
    return MaterialSpectrum(material_id, grid, mu, weights, keys)


# --- label table ---------------------------------------------------------------------------------


class TimeLimitExceeded(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    """SIGALRM-based limit (main thread, Unix): pymatgen's analysers are pure Python and interruptible."""

    def _raise(signum, frame):
        raise TimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def label_row(material_id: str, structure) -> dict:
    labels = structure_labels(structure, (ABSORBER,))
    cu = labels.absorbers[ABSORBER]
    return {
        "material_id": material_id,
        "formula": labels.formula,
        "elements": ";".join(labels.elements),
        "cu_oxidation_class": "" if cu.oxidation_state_class is None else cu.oxidation_state_class,
        "cu_oxidation_mean": "" if cu.oxidation_state_mean is None else f"{cu.oxidation_state_mean:.4f}",
        "cu_oxidation_method": cu.oxidation_method or "",
        "cu_cn_class": cu.cn_class,
        "cu_cn_mean": f"{cu.cn_mean:.4f}",
        "cu_cn_mixed": int(cu.cn_mixed),
        "cu_site_cns": ";".join(str(cn) for cn in cu.site_cns),
        "cu_n_sites": cu.n_sites,
        "density": f"{labels.density:.5f}",
        "crystal_system": labels.crystal_system,
        "space_group_symbol": labels.space_group_symbol,
        "space_group_number": labels.space_group_number,
        "status": "ok" if cu.oxidation_method else f"no oxidation state ({cu.oxidation_reason})",
    }


def compute_omnixas_labels(
    out_path: str | Path = LABELS_FILE,
    *,
    timeout_s: float = 120.0,
    material_ids: Iterable[str] | None = None,
    progress: bool = True,
) -> Counter:
    """Compute the label table of the OmniXAS Cu structures and write it as a gzipped CSV.

    Each structure gets ``timeout_s`` seconds; structures that time out or fail keep a row with the
    reason in ``status`` (and empty labels). Returns counts of statuses and oxidation methods.
    """
    from pymatgen.core import Structure
    from tqdm import tqdm

    poscars = omnixas_poscars()
    ids = sorted(material_ids if material_ids is not None else poscars)
    counts: Counter = Counter()
    rows = []
    for material_id in tqdm(ids, disable=not progress, desc="labels", mininterval=5):
        structure = Structure.from_str(poscars[material_id], fmt="poscar")
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(), time_limit(timeout_s):
                warnings.simplefilter("ignore")
                row = label_row(material_id, structure)
        except TimeLimitExceeded:
            row = {"material_id": material_id, "status": f"timeout after {timeout_s:.0f} s"}
        except Exception as err:  # noqa: BLE001 - recorded per row, the table must be complete
            row = {"material_id": material_id, "status": f"error: {type(err).__name__}: {err}"}
        row.setdefault("formula", structure.composition.reduced_formula)
        counts["status:" + row["status"].split(" (")[0].split(":")[0]] += 1
        counts["oxidation_method:" + (row.get("cu_oxidation_method") or "none")] += 1
        counts["seconds_max"] = max(counts["seconds_max"], round(time.perf_counter() - start))
        rows.append(row)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same table gives the same bytes, so its sha256 can identify it in model cards.
    with open(out_path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        text = _csv_text(rows)
        gz.write(text.encode())
    return counts


def _csv_text(rows: list[dict]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LABEL_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_omnixas_labels(path: str | Path = LABELS_FILE) -> dict[str, dict]:
    """material_id -> label row (typed) from the committed label table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"label table {path} is missing; compute it with sfn_stream.offline.training.compute_omnixas_labels()"
        )
    out = {}
    with gzip.open(path, "rt") as fh:
        for row in csv.DictReader(fh):
            out[row["material_id"]] = _typed(row)
    return out


def _typed(row: dict) -> dict:
    def number(key, cast):
        return cast(row[key]) if row.get(key) not in (None, "") else None

    return {
        "material_id": row["material_id"],
        "formula": row["formula"],
        "elements": tuple(row["elements"].split(";")) if row.get("elements") else (),
        "cu_oxidation_class": number("cu_oxidation_class", int),
        "cu_oxidation_mean": number("cu_oxidation_mean", float),
        "cu_oxidation_method": row.get("cu_oxidation_method") or None,
        "cu_cn_class": number("cu_cn_class", int),
        "cu_cn_mean": number("cu_cn_mean", float),
        "cu_cn_mixed": bool(number("cu_cn_mixed", int)),
        "density": number("density", float),
        "crystal_system": row.get("crystal_system") or None,
        "space_group_number": number("space_group_number", int),
        "status": row["status"],
    }


if __name__ == "__main__":  # python -m sfn_stream.offline.training._omnixas  (recomputes the label table)
    import sys

    print(compute_omnixas_labels(sys.argv[1] if len(sys.argv) > 1 else LABELS_FILE))
