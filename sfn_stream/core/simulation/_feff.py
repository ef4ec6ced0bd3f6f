"""FEFF10 K-edge XANES through the ``feff10-rs`` bindings (Rehr et al., PCCP 12, 5503 (2010)).

``feff_input`` writes a feff.inp for one absorbing site of a pymatgen structure; ``run_feff``
runs it in a folder and reads ``xmu.dat``. The ``OMNIXAS`` settings are those of the
Materials Project / OmniXAS Cu spectra (FEFF 9.9.1: SCF 7 A, FMS 9 A, RPA core hole), so
that spectra computed here sit on the same footing as the training data.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


class FeffRunError(RuntimeError):
    """FEFF failed or produced no xmu.dat."""


class FeffTimeout(FeffRunError):
    """FEFF ran past its time limit and was stopped."""


# The stages a K-edge XANES run needs (CONTROL 1 1 1 1 1 1 plus the atomic and screening steps
# behind the RPA core hole). The others of feff10's default pipeline (DMDW, LDOS, CRPA, OPCONSAT,
# SFCONV, COMPTON, EELS, RHORRP) do nothing for our cards but each cost a process start (~0.2 s);
# on fcc Cu the reduced pipeline gives a byte-identical xmu.dat.
XANES_STAGES = ("RDINP", "ATOMIC", "POT", "SCREEN", "XSPH", "FMS", "MKGTR", "PATH", "GENFMT", "FF2X")


@dataclass(frozen=True)
class FeffSettings:
    scf_radius: float | None = 7.0  # None: no self-consistent potentials
    fms_radius: float = 9.0
    cluster_radius: float = 10.0
    core_hole: str = "RPA"
    xanes_card: str = "XANES 4 0.04 0.1"
    egrid: tuple[str, ...] = ("k_grid -1 0 0.04", "k_grid 0 6 0.04")
    scf_max_iterations: int = 100  # FEFF's nscmt; a cap bounds the cost of slowly converging cells
    scf_mixing: float = 0.2  # FEFF's ca (Broyden mixing of the first iterations); smaller calms divergence

    def cards(self) -> list[str]:
        cards = ["CONTROL 1 1 1 1 1 1", f"COREHOLE {self.core_hole}", "S02 0", "EXCHANGE 0 0.0 0.0 2"]
        if self.scf_radius:
            cards.append(f"SCF {self.scf_radius:.1f} 0 {self.scf_max_iterations} {self.scf_mixing:g} 3")
        cards += [f"FMS {self.fms_radius:.1f} 0", self.xanes_card, "EDGE K", "RPATH -1", "EGRID", *self.egrid]
        return cards

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        """Short content hash of the settings: campaign items are keyed by structure id + this.

        Fields added later (``_KEY_SINCE_V2``) enter the hash only when they differ from their default,
        so that the keys of existing campaigns stay valid.
        """
        values = self.to_dict()
        for name, default in _KEY_SINCE_V2.items():
            if values[name] == default:
                del values[name]
        text = json.dumps(values, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def describe(self) -> str:
        scf = f"SCF {self.scf_radius:g} A" if self.scf_radius else "no SCF"
        if self.scf_radius and self.scf_mixing != 0.2:
            scf += f" (mixing {self.scf_mixing:g})"
        return f"{scf}, FMS {self.fms_radius:g} A, cluster {self.cluster_radius:g} A, core hole {self.core_hole}"


_KEY_SINCE_V2 = {"scf_mixing": 0.2}

OMNIXAS = FeffSettings()


@dataclass
class FeffSpectrum:
    energy: np.ndarray  # FEFF's absolute scale (eV)
    mu: np.ndarray
    mu0: np.ndarray
    seconds: float
    settings: FeffSettings


def feff_input(structure, absorber_index: int, settings: FeffSettings = OMNIXAS, title: str = "") -> str:
    """feff.inp text for the K edge of site ``absorber_index``.

    Unique potentials are one per element of the cluster around the absorber (absorber as ipot 0);
    their stoichiometry (xnatph) is the unit cell's composition, as FEFF expects for the interstitial
    density. An element with no atom in the cluster gets no potential: FEFF stops in RDINP on a
    potential without atoms ("No atoms or overlap cards for unique pot"), which happens to the
    absorber's own element when no other atom of it lies within the cluster radius.
    """
    from pymatgen.core import Element
    from pymatgen.io.feff.inputs import Atoms

    absorber = structure[absorber_index].specie.symbol
    cluster = Atoms(structure, absorber_index, settings.cluster_radius).cluster
    elements = sorted({site.specie.symbol for site in list(cluster)[1:]}, key=lambda el: (el != absorber, el))
    counts = structure.composition.element_composition
    ipot = {el: i + 1 for i, el in enumerate(elements)}
    lines = [f"TITLE {title or structure.composition.reduced_formula}", *settings.cards(), "", "POTENTIALS"]
    lines.append(f"    0  {Element(absorber).Z:3d}  {absorber:<4s}  -1  -1  0.0001  0")
    for el in elements:
        lines.append(f"  {ipot[el]:3d}  {Element(el).Z:3d}  {el:<4s}  -1  -1  {counts[el]:g}  0")
    lines += ["", "ATOMS"]
    for i, site in enumerate(cluster):
        pot = 0 if i == 0 else ipot[site.specie.symbol]
        x, y, z = site.coords
        lines.append(f"  {x:11.5f} {y:11.5f} {z:11.5f}  {pot:3d}  {site.specie.symbol}")
    lines.append("END")
    return "\n".join(lines) + "\n"


def read_xmu(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(energy, mu, mu0) from a FEFF xmu.dat (columns omega, e, k, mu, mu0, chi)."""
    table = np.loadtxt(path, comments="#")
    return table[:, 0], table[:, 3], table[:, 4]


_DIAGNOSTIC = re.compile(r"fatal|error|cannot|no atoms|bad counts|too many|try to|not converge", re.I)


def feff_diagnosis(workdir: str | Path, limit: int = 3) -> str:
    """FEFF's own words on a failure: the first distinct diagnostic lines of its log*.dat files
    ("Fatal error in subroutine corval. Try to reduce ca1 in the SCF card.")"""
    found: list[str] = []
    for log in sorted(Path(workdir).glob("log*.dat")):
        for line in log.read_text(errors="replace").splitlines():
            line = " ".join(line.replace(":WARNING", "").split())
            if _DIAGNOSTIC.search(line) and line not in found and "SEND a bug report" not in line:
                found.append(line)
                if len(found) == limit:
                    return " | ".join(found)
    return " | ".join(found)


def run_feff(
    inp: str,
    workdir: str | Path,
    settings: FeffSettings = OMNIXAS,
    *,
    timeout: float | None = None,
    stages: tuple[str, ...] | None = XANES_STAGES,
) -> FeffSpectrum:
    """Run FEFF10 on ``inp`` in ``workdir`` (created) and read the spectrum.

    ``timeout`` (s) bounds the whole run: feff10 kills a stage that alone exceeds it, and the run
    stops after the stage during which the total passed it (:class:`FeffTimeout`). ``stages=None``
    runs feff10's full default pipeline.
    """
    import feff10

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "feff.inp").write_text(inp)
    started = time.perf_counter()
    stage_list = None if stages is None else [feff10.Stage.from_name(name) for name in stages]

    def watchdog(stage, progress):
        if timeout is not None and time.perf_counter() - started > timeout:
            raise FeffTimeout(f"FEFF passed its {timeout:g} s limit during {stage} in {workdir}")

    try:
        config = feff10.FeffConfig(str(workdir), feff10.FeffInput.parse(inp), stages=stage_list,
                                   stage_timeout=timeout)
        feff10.FeffPipeline(config).run_with_progress(watchdog)
    except FeffTimeout:
        raise
    except Exception as err:
        if "timed out" in str(err):
            raise FeffTimeout(f"FEFF passed its {timeout:g} s limit in {workdir}: {err}") from err
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FeffRunError(f"FEFF failed: {first_line}; FEFF's log: {feff_diagnosis(workdir) or '-'} "
                           f"(in {workdir})") from err
    xmu = workdir / "xmu.dat"
    if not xmu.is_file():
        raise FeffRunError(f"FEFF wrote no xmu.dat in {workdir}")
    energy, mu, mu0 = read_xmu(xmu)
    return FeffSpectrum(energy, mu, mu0, time.perf_counter() - started, settings)
