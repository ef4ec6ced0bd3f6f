"""Campaign items: one FEFF site, or one material's labels, stick pattern or teacher labels.

An item is keyed by material id + what it computes + the version of how it is computed (for FEFF:
the settings hash), so a finished item is never computed twice and a change of method makes new
keys. The ``compute_*`` functions run inside the sandbox child process; they take and return plain
data (structure dicts, lists) so that they travel between processes and machines.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# A FEFF spectrum per (material, metal) taken from a committed corpus snapshot instead of computed.
SEED_KIND = "feff_material"
ITEM_KINDS = ("feff", "labels", "sticks", "teacher")
# Bump a version when the code behind that kind of item changes its output.
ITEM_VERSIONS = {"labels": "labels1", "sticks": "sticks1", "teacher": "teacher1"}


@dataclass(frozen=True)
class Item:
    kind: str
    material_id: str
    version: str  # FEFF settings key, or ITEM_VERSIONS[kind]
    element: str | None = None
    site: int | None = None  # representative index of a group of equivalent sites

    @property
    def key(self) -> str:
        where = f"/{self.site:03d}_{self.element}" if self.kind == "feff" else ""
        return f"{self.kind}/{self.material_id}{where}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}


def _structure(record: dict):
    from pymatgen.core import Structure

    return Structure.from_dict(record)


def _settings(record: dict):
    from sfn_stream.core.simulation import FeffSettings

    return FeffSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})


def compute_feff_site(structure: dict, site: int, settings: dict, workdir: str, timeout: float | None,
                      fallbacks: list[dict] | None = None) -> dict:
    """K-edge XANES of one site: native FEFF energy grid, mu and E0 (the FEFF folder is removed).

    When FEFF fails (not a timeout) with ``settings``, each of ``fallbacks`` is tried in turn: a
    self-consistent loop on a small cluster can diverge ("Cannot determine Norman radius"), which a
    larger SCF radius usually cures. ``settings_key`` of the result says which settings made it.
    """
    from sfn_stream.core.simulation import feff_input

    crystal = _structure(structure)
    return run_feff_inputs([(record, feff_input(crystal, site, _settings(record)))
                            for record in [settings, *(fallbacks or [])]], workdir, timeout)


def run_feff_inputs(inputs: list[tuple[dict, str]], workdir: str, timeout: float | None) -> dict:
    """Run the rendered feff.inp of each (settings record, text) in turn until one succeeds.

    The part of :func:`compute_feff_site` after rendering: it needs numpy and feff10 only (no
    pymatgen), so an offline batch (:mod:`sfn_stream.offline.corpus._batch`) runs inputs rendered elsewhere.
    """
    from sfn_stream.core.simulation import FeffRunError, FeffTimeout, run_feff
    from sfn_stream.core.spectra import find_e0  # numpy only, as is all of sfn_stream.core.spectra

    attempts: list[str] = []
    for n, (record, inp) in enumerate(inputs, start=1):
        feff_settings = _settings(record)
        folder = Path(workdir) / feff_settings.key()
        try:
            spectrum = run_feff(inp, folder, feff_settings, timeout=timeout)
        except FeffTimeout:
            raise  # a fallback would cost more, not less
        except Exception as err:
            attempts.append(f"{feff_settings.key()}: {err}"[:300])
            if n == len(inputs):
                if len(inputs) == 1:
                    raise
                raise FeffRunError(f"FEFF failed with every settings tried: {' | '.join(attempts)}") from err
            continue
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            _remove_if_empty(Path(workdir))  # the item's own folder, once no attempt is left in it
        return {
            "energy": np.round(spectrum.energy, 3).tolist(),
            "mu": np.round(spectrum.mu, 6).tolist(),
            "e0": float(find_e0(spectrum.energy, spectrum.mu)),
            "feff_seconds": round(spectrum.seconds, 2),
            "settings_key": feff_settings.key(),
            "failed_attempts": attempts,
        }
    raise ValueError("no FEFF settings given")


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty, or already gone
        pass


def compute_labels(structure: dict, metals: list[str]) -> dict:
    """Exact labels of :func:`sfn_stream.core.chemistry.structure_labels` (symmetry, density, per-metal
    oxidation state with its method, CrystalNN coordination)."""
    import warnings

    from sfn_stream.core.chemistry import structure_labels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return structure_labels(_structure(structure), absorbers=tuple(metals)).to_dict()


def compute_sticks(structure: dict) -> dict:
    """Stick pattern (Q, LP-free intensity, hkl) of :func:`sfn_stream.core.simulation.stick_pattern`."""
    from sfn_stream.core.simulation import stick_pattern

    sticks = stick_pattern(_structure(structure))
    return {"q": np.round(sticks.q, 5).tolist(), "intensity": np.round(sticks.intensity, 5).tolist(),
            "hkl": sticks.hkl.tolist()}


def compute_teacher(structure: dict) -> dict:
    from ._teachers import teacher_labels

    return teacher_labels(_structure(structure)).to_dict()


def execute(item: Item, payload: dict, sandbox, timeout: float | None, scratch: str | Path,
            stop_at: float | None = None) -> dict:
    """Run one item in ``sandbox``; the store record, with the error instead of a value on failure.

    A FEFF payload holds either the structure and settings (rendered in the sandbox) or ``inputs``,
    the feff.inp texts already rendered (an offline batch). ``stop_at`` (``time.monotonic()``) cuts
    a FEFF item short at that time whatever its own limit.
    """
    started = time.perf_counter()
    record: dict[str, Any] = {**item.to_dict(), "ok": False}
    try:
        if item.kind == "feff":
            folder = str(Path(scratch) / item.key.replace("/", "_").replace("@", "_"))
            if "inputs" in payload:
                function, args = run_feff_inputs, (payload["inputs"], folder, timeout)
                attempts = len(payload["inputs"])
            else:
                function = compute_feff_site
                args = (payload["structure"], item.site, payload["settings"], folder, timeout,
                        payload.get("fallbacks", []))
                attempts = 1 + len(args[-1])
            limit = None if timeout is None else timeout * attempts + 120
            if stop_at is not None:
                left = max(0.0, stop_at - time.monotonic())
                limit = left if limit is None else min(limit, left)
            value = sandbox.call(function, *args, timeout=limit)
        elif item.kind == "labels":
            value = sandbox.call(compute_labels, payload["structure"], payload["metals"], timeout=timeout)
        elif item.kind == "sticks":
            value = sandbox.call(compute_sticks, payload["structure"], timeout=timeout)
        elif item.kind == "teacher":
            value = sandbox.call(compute_teacher, payload["structure"], timeout=timeout)
        else:
            raise ValueError(f"unknown item kind {item.kind!r}")
        record.update(ok=True, value=value)
    except Exception as err:  # recorded, the campaign goes on
        record["error"] = f"{type(err).__name__}: {err}"[:500]
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record
