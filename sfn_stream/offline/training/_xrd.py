"""Crystal-system classifier from powder XRD: stick table, splits, training, evaluation."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from sfn_stream.core import paths
from sfn_stream.core.chemistry import CRYSTAL_SYSTEMS
from sfn_stream.core.serialize import json_safe
from sfn_stream.core.simulation import StickTable, stick_pattern
from sfn_stream.offline.metrics import fit_temperature, probability_metrics
from sfn_stream.offline.splits import SPLITS, hashed_splits

from ._omnixas import TimeLimitExceeded, time_limit

SYMPREC = 0.1
DEFAULT_STICK_TABLE = paths.DATA_DIR / "xrd_sticks" / "xrd_sticks.npz"


def structure_record(key: str, structure, *, timeout_s: float = 30.0,
                     calculator: str = "pymatgen") -> tuple[dict | None, str | None]:
    """Stick pattern + crystal-system label of one structure, or (None, reason)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        with time_limit(timeout_s):
            sga = SpacegroupAnalyzer(structure, symprec=SYMPREC)
            crystal_system = sga.get_crystal_system()
            spacegroup = sga.get_space_group_number()
            sticks = stick_pattern(structure, calculator=calculator)
    except TimeLimitExceeded:
        return None, "timeout"
    except Exception as err:  # noqa: BLE001 - one structure pymatgen cannot handle must not stop a build
        return None, f"calculation_failed: {type(err).__name__}"
    if len(sticks) == 0:
        return None, "no_reflections"
    if crystal_system not in CRYSTAL_SYSTEMS:
        return None, f"unknown_crystal_system: {crystal_system}"
    record = {
        "id": key,
        "formula": structure.composition.reduced_formula,
        "spacegroup": int(spacegroup),
        "crystal_system": crystal_system,
        "sticks": sticks,
    }
    return record, None


def _iter_all_structures(sources: tuple[str, ...], limit: int | None):
    if "amcsd" in sources:
        from ._amcsd import amcsd_ids, iter_amcsd_structures

        ids = amcsd_ids()[:limit] if limit else None
        for entry in iter_amcsd_structures(ids):
            yield f"amcsd:{entry.amcsd_id}", entry.structure, entry.reject_reason
    if "mp" in sources:
        from pymatgen.core import Structure

        from sfn_stream.offline.shared import omnixas_poscars

        items = sorted(omnixas_poscars().items())
        for mp_id, poscar in items[:limit] if limit else items:
            try:
                yield mp_id, Structure.from_str(poscar, fmt="poscar"), None
            except Exception as err:  # noqa: BLE001 - recorded as a rejection, the build goes on
                yield mp_id, None, f"poscar_unreadable: {type(err).__name__}"


def build_stick_table(
    out_path: str | Path = DEFAULT_STICK_TABLE,
    *,
    sources: tuple[str, ...] = ("amcsd", "mp"),
    timeout_s: float = 30.0,
    limit: int | None = None,
    checkpoint_every: int = 500,
    progress: bool = True,
) -> StickTable:
    """Compute the stick patterns of the AMCSD (larixite) and omnixas_cu (Materials Project) structures.

    One process; slow structures are skipped after ``timeout_s`` and counted. Writes ``out_path``
    (compressed .npz) every ``checkpoint_every`` structures and at the end, and a JSON log of the
    rejections next to it.
    """
    out_path = Path(out_path)
    records: list[dict] = []
    rejected: dict[str, str] = {}
    started = time.time()
    iterator = _iter_all_structures(sources, limit)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="xrd sticks", mininterval=30)
    for n, (key, structure, reason) in enumerate(iterator, start=1):
        if structure is not None:
            record, reason = structure_record(key, structure, timeout_s=timeout_s)
            if record is not None:
                records.append(record)
        if reason is not None:
            rejected[key] = reason
        if n % checkpoint_every == 0:
            _write_table(out_path, records, rejected, sources, timeout_s, started, final=False)
    return _write_table(out_path, records, rejected, sources, timeout_s, started, final=True)


def _write_table(out_path, records, rejected, sources, timeout_s, started, *, final) -> StickTable:
    counts = Counter(reason.split(":")[0] for reason in rejected.values())
    info = {
        "sources": list(sources),
        "n_structures": len(records),
        "n_rejected": len(rejected),
        "rejected_by_reason": dict(sorted(counts.items())),
        "timeout_s": timeout_s,
        "symprec": SYMPREC,
        "complete": final,
        "elapsed_s": round(time.time() - started, 1),
        "crystal_systems": dict(Counter(r["crystal_system"] for r in records)),
    }
    table = StickTable.from_records(records, info)
    tmp = out_path.with_suffix(".tmp.npz")
    table.save(tmp)
    tmp.replace(out_path)
    out_path.with_suffix(".rejected.json").write_text(json.dumps({"info": info, "rejected": rejected}, indent=1))
    return table


# --- splits ----------------------------------------------------------------------------------


def split_group(formula: str, spacegroup: int) -> str:
    """Structures of one composition and space group (duplicates, P/T series) share a split."""
    return f"{formula}|{int(spacegroup)}"


def assign_splits(table: StickTable, seed: int = 0) -> dict[str, np.ndarray]:
    """Indices of each split: a seeded hash of the group key, so a group never straddles splits."""
    return hashed_splits([split_group(f, sg) for f, sg in zip(table.formulas, table.spacegroups)], seed)


def write_split_files(table: StickTable, splits: dict[str, np.ndarray], folder: str | Path) -> dict[str, str]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, idx in splits.items():
        path = folder / f"xrd_{name}.txt"
        path.write_text("".join(f"{table.ids[i]}\n" for i in sorted(idx, key=lambda i: table.ids[i])))
        paths[name] = str(path)
    return paths


def read_split_files(table: StickTable, folder: str | Path) -> dict[str, np.ndarray] | None:
    """Splits from committed id lists; None when the files are absent. Unknown ids are ignored."""
    folder = Path(folder)
    if not all((folder / f"xrd_{name}.txt").is_file() for name in SPLITS):
        return None
    position = {key: i for i, key in enumerate(table.ids)}
    out = {}
    for name in SPLITS:
        ids = (folder / f"xrd_{name}.txt").read_text().split()
        out[name] = np.array(sorted(position[k] for k in ids if k in position), dtype=int)
    return out


# --- data --------------------------------------------------------------------------------------


def labels_of(table: StickTable) -> np.ndarray:
    index = {name: k for k, name in enumerate(CRYSTAL_SYSTEMS)}
    return np.array([index[c] for c in table.crystal_systems], dtype=np.int64)


def synthesize_set(table: StickTable, indices, rng: np.random.Generator, augmentation=None) -> np.ndarray:
    """Augmented, preprocessed patterns of the structures ``indices`` (in order), float32."""
    from sfn_stream.core.simulation import synthesize_pattern
    from sfn_stream.core.spectra import XRD_Q_GRID

    out = np.empty((len(indices), len(XRD_Q_GRID)), dtype=np.float32)
    for row, i in enumerate(indices):
        out[row] = synthesize_pattern(table.sticks(i), XRD_Q_GRID, rng, augmentation=augmentation)
    return out


# --- measured development set ------------------------------------------------------------------


def measured_dev_set() -> tuple[list[dict], list[dict]]:
    """Single-phase measured patterns with a crystal-system label from ``../shared`` (dev only).

    Returns (usable items, skipped items with reasons). Wavelength: the CIF's own, else INDEX.csv.
    """

    from sfn_stream.core.spectra import PdCifError, preprocess_xrd, read_pdcif
    from sfn_stream.offline.shared import shared_path

    root = shared_path("data", "pxrd_experimental_dev")
    items, skipped = [], []
    for row in _csv_rows(root / "labels.csv"):
        name = row["file"]
        if row["phases"].strip() != "1" or row["crystal_system"] not in CRYSTAL_SYSTEMS:
            skipped.append({"file": name, "reason": "multi-phase or no crystal-system label"})
            continue
        x, y = _read_xy(root / name)
        wavelength = float(row["wavelength_A"])
        items.append(_item(name, row["formula"], row["crystal_system"], preprocess_xrd(x, y, wavelength=wavelength), "labels.csv"))
    for row in _csv_rows(root / "iucr_rietveld" / "INDEX.csv"):
        name = f"iucr_rietveld/{row['file']}"
        if row["nphases"].strip() != "1" or row["has_powder_profile"] != "True" or row["crystal_system"] not in CRYSTAL_SYSTEMS:
            skipped.append({"file": name, "reason": f"nphases {row['nphases']} / profile {row['has_powder_profile']}"})
            continue
        try:
            profile = read_pdcif(root / name)
        except PdCifError as err:
            skipped.append({"file": name, "reason": str(err)})
            continue
        wavelength, source = profile.wavelength, "cif"
        if wavelength is None and row["wavelength_A"].strip():
            wavelength, source = float(row["wavelength_A"]), "INDEX.csv"
        if wavelength is None:
            skipped.append({"file": name, "reason": "no wavelength in the CIF or INDEX.csv"})
            continue
        pattern = preprocess_xrd(profile.two_theta, profile.intensity, wavelength=wavelength)
        items.append(_item(name, row["formula"], row["crystal_system"], pattern, f"wavelength from {source}"))
    return items, skipped


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _read_xy(path: Path):
    try:
        from sfn_stream.core.spectra import (
            read_xy,  # the shared two-column reader, when present
        )
    except ImportError:
        data = np.loadtxt(path, comments="#")
        return data[:, 0], data[:, 1]
    return read_xy(path)


def _item(name, formula, crystal_system, pattern, note) -> dict:
    return {"file": name, "formula": formula, "crystal_system": crystal_system, "pattern": pattern, "note": note}


def evaluate_measured(classifier, items: list[dict]) -> dict:
    usable = [it for it in items if it["pattern"].usable]
    out = {"n_usable": len(usable), "n_unusable": len(items) - len(usable), "rows": []}
    if usable:
        probs = classifier.probabilities(np.stack([it["pattern"].intensity for it in usable]))
        labels = np.array([CRYSTAL_SYSTEMS.index(it["crystal_system"]) for it in usable])
        out.update(probability_metrics(labels, probs, CRYSTAL_SYSTEMS))
        for it, p in zip(usable, probs):
            out["rows"].append({
                "file": it["file"], "formula": it["formula"], "true": it["crystal_system"],
                "predicted": CRYSTAL_SYSTEMS[int(p.argmax())], "probability": round(float(p.max()), 3),
                "p_true": round(float(p[CRYSTAL_SYSTEMS.index(it["crystal_system"])]), 3),
                "coverage": round(it["pattern"].coverage_fraction, 2), "flags": it["pattern"].flags,
            })
    for it in items:
        if not it["pattern"].usable:
            out["rows"].append({"file": it["file"], "true": it["crystal_system"], "unusable": it["pattern"].reason})
    return out


# --- training ----------------------------------------------------------------------------------


def train_xrd_bundle(
    out_dir: str | Path,
    *,
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-3,
    stick_table: str | Path | StickTable = DEFAULT_STICK_TABLE,
    splits_dir: str | Path | None = None,
    test_patterns_per_structure: int = 3,
    val_patterns_per_structure: int = 2,
    max_train_structures: int | None = None,
    architecture: dict | None = None,
    evaluate_measured_set: bool = True,
    threads: int = 2,
    time_budget_s: float | None = None,
    progress: bool = True,
):
    """Train the crystal-system classifier on augmented simulated patterns; write and return the bundle.

    Splits: the committed ``data/splits/xrd_*.txt`` when ``splits_dir`` holds them, else assigned by
    :func:`assign_splits` (seeded, grouped by formula + space group) and written there.
    ``time_budget_s`` (for a shared CPU): the learning-rate schedule runs on the larger of the step
    fraction and the elapsed-time fraction, and training stops when either reaches 1; the card
    records the steps taken.
    """
    import datetime

    import torch
    from tqdm import tqdm

    from sfn_stream.core.files import file_sha256
    from sfn_stream.core.networks import (
        XrdClassifier,
        XrdCnnTransformer,
        architecture_of,
        save_bundle,
    )
    from sfn_stream.core.simulation import AUGMENTATION
    from sfn_stream.core.spectra import BACKGROUND, XRD_Q_MIN, XRD_Q_POINTS, XRD_Q_STEP

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    table_path = None
    if not isinstance(stick_table, StickTable):
        table_path = Path(stick_table)
        stick_table = StickTable.load(table_path)
    table = stick_table
    labels = labels_of(table)
    splits_dir = Path(splits_dir) if splits_dir is not None else paths.SPLITS_DIR
    splits = read_split_files(table, splits_dir)
    if splits is None:
        splits = assign_splits(table, seed)
        write_split_files(table, splits, splits_dir)
    train_idx = splits["train"][:max_train_structures] if max_train_structures else splits["train"]

    rng_val, rng_test = np.random.default_rng(seed + 101), np.random.default_rng(seed + 202)
    val_idx = np.repeat(splits["val"], val_patterns_per_structure)
    x_val = synthesize_set(table, val_idx, rng_val)

    kwargs = dict(architecture or {})
    model = XrdCnnTransformer(**kwargs)
    counts = np.bincount(labels[train_idx], minlength=len(CRYSTAL_SYSTEMS)).astype(float)
    weights = np.where(counts > 0, (counts.clip(1) / counts.sum()) ** -0.5, 0.0)
    weights = weights / weights[counts > 0].mean()
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    steps_per_epoch = max(1, int(np.ceil(len(train_idx) / batch_size)))
    total_steps = epochs * steps_per_epoch
    started = time.time()

    def progress_fraction(step: int) -> float:
        elapsed = (time.time() - started) / time_budget_s if time_budget_s else 0.0
        return max(step / total_steps, elapsed)

    def lr_factor(step: int) -> float:  # linear warm-up over 5 %, cosine decay to 2 %
        f = progress_fraction(step)
        return min(1.0, max(f, 1e-3) / 0.05) * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * min(f, 1.0))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    rng = np.random.default_rng(seed)
    step = 0
    history, best = [], (-1.0, None, -1)
    bar = tqdm(total=total_steps, desc="xrd train", disable=not progress, mininterval=10)
    for epoch in range(epochs):
        if progress_fraction(step) >= 1:
            break
        model.train()
        order = rng.permutation(train_idx)
        losses = []
        for b in range(steps_per_epoch):
            if progress_fraction(step) >= 1:
                break
            batch = order[b * batch_size : (b + 1) * batch_size]
            x = torch.from_numpy(synthesize_set(table, batch, rng))
            y = torch.from_numpy(labels[batch])
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}")
        val_logits = _logits(model, x_val)
        val_acc = float((val_logits.argmax(1) == labels[val_idx]).mean()) if len(val_idx) else 0.0
        history.append({"epoch": epoch, "steps": step, "minutes": round((time.time() - started) / 60, 1),
                        "train_loss": round(float(np.mean(losses)), 4), "val_accuracy": round(val_acc, 4)})
        if val_acc > best[0]:
            best = (val_acc, {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch)
    bar.close()
    model.load_state_dict(best[1])

    val_logits = _logits(model, x_val)
    temperature = fit_temperature(labels[val_idx], logits=val_logits) if len(val_idx) else 1.0
    classifier = XrdClassifier(model, temperature, CRYSTAL_SYSTEMS)
    test_idx = np.repeat(splits["test"], test_patterns_per_structure)
    x_test = synthesize_set(table, test_idx, rng_test)
    metrics = {
        "simulated_test": {
            "description": (
                f"held-out test split of simulated patterns ({len(splits['test'])} structures x "
                f"{test_patterns_per_structure} augmented patterns, augmentation seed {seed + 202}); "
                "temperature-scaled probabilities"
            ),
            **(probability_metrics(labels[test_idx], classifier.probabilities(x_test), CRYSTAL_SYSTEMS)
               if len(test_idx) else {"n": 0}),
        },
        "simulated_val": {
            "description": "validation split (used for model selection and temperature fitting)",
            **(probability_metrics(labels[val_idx], classifier.probabilities(x_val), CRYSTAL_SYSTEMS)
               if len(val_idx) else {"n": 0}),
        },
    }
    if evaluate_measured_set:
        items, skipped = measured_dev_set()
        metrics["measured_dev"] = {
            "description": (
                "measured single-phase patterns of ../shared/data/pxrd_experimental_dev (XRD-AutoAnalyzer "
                "examples + IUCr Rietveld CIF profiles); never used for training or model selection"
            ),
            **evaluate_measured(classifier, items),
            "skipped": skipped,
        }

    sha = file_sha256(table_path) if table_path else None
    card = {
        "name": "xrd-crystal-system",
        "version": "0.1.0",
        "kind": "xrd",
        "created": datetime.date.today().isoformat(),
        "training_data": {
            "description": (
                "pymatgen XRDCalculator stick patterns (LP factor removed) of ordered AMCSD structures "
                "shipped in larixite and of the omnixas_cu Materials Project structures; profiles "
                "synthesised with augmentation at training time"
            ),
            "stick_table": table_path.name if table_path else None,
            "sha256": sha,
            "build": "python -m sfn_stream.offline.training._xrd build",
            "table_info": table.info,
            "n_structures": {name: len(idx) for name, idx in splits.items()},
            "n_train_used": len(train_idx),
            "train_class_counts": {c: int(n) for c, n in zip(CRYSTAL_SYSTEMS, counts)},
            "splits": "data/splits/xrd_{train,val,test}.txt (grouped by reduced formula + space group, seeded hash)",
            "augmentation": json_safe(AUGMENTATION),
            "seed": seed,
        },
        "label_sources": {"crystal_system": f"pymatgen SpacegroupAnalyzer(symprec={SYMPREC}).get_crystal_system()"},
        "preprocessing": {
            "function": "sfn_stream.core.spectra.preprocess_xrd",
            "q_grid": {"start": XRD_Q_MIN, "step": XRD_Q_STEP, "points": XRD_Q_POINTS, "unit": "1/A"},
            "rebinning": "area-conserving bin means (cumulative trapezoid)",
            "background": BACKGROUND,
            "normalisation": "background subtracted, clipped at 0, max = 1; zeros outside the measured range",
        },
        "architecture": architecture_of(model, **kwargs),
        "tasks": {"crystal_system": {"type": "classification", "classes": list(CRYSTAL_SYSTEMS)}},
        "metrics": metrics,
        "calibration": {"method": "temperature scaling on the validation split", "temperature": temperature},
        "training": {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": "AdamW wd 1e-2, 5 % warm-up + cosine",
            "steps": step, "time_budget_s": time_budget_s, "minutes": round((time.time() - started) / 60, 1),
            "loss": "cross-entropy, class weights freq^-0.5", "best_epoch": best[2], "history": history,
            "threads": threads,
        },
    }
    weights_out = {"model": model.state_dict(), "temperature": torch.tensor(temperature)}
    return save_bundle(out_dir, card, weights_out)


def _logits(model, x: np.ndarray, batch: int = 512) -> np.ndarray:
    import torch

    model.eval()
    with torch.inference_mode():
        out = [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(CRYSTAL_SYSTEMS)))


if __name__ == "__main__":  # python -m sfn_stream.offline.training._xrd build|train [path]
    import sys

    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "build":
        build_stick_table(sys.argv[2] if len(sys.argv) > 2 else DEFAULT_STICK_TABLE)
    elif command == "train":
        bundle = train_xrd_bundle(sys.argv[2] if len(sys.argv) > 2 else paths.models_dir() / "xrd-crystal-system")
        print(bundle.id)
    else:
        sys.exit("usage: python -m sfn_stream.offline.training._xrd build [sticks.npz] | train [bundle_dir]")
