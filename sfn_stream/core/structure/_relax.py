"""Optional CHGNet relaxation of the best candidates (Deng et al., Nat. Mach. Intell. 5, 1031 (2023)).

A substituted template keeps the template's atomic positions and a cell rescaled with ionic radii;
relaxing it with the universal CHGNet potential (``chgnet``, in the ``data`` extra) moves atoms and
cell towards the new chemistry. The relaxed structure's pattern is fitted to the measurement again
(isotropic scale, free axes, zero shift) and its similarity replaces the unrelaxed one in the score,
so a candidate whose structure type is right but whose substituted geometry was off can move up.
The relaxed cell keeps the template's crystal system for the fit; CHGNet's energy per atom is
reported, not scored (a universal potential's energies of hypothetical cells are not a prior).
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings

RELAX_TOP = 3
RELAX_STEPS = 200
RELAX_FMAX = 0.1  # eV/A


class RelaxationUnavailable(RuntimeError):
    """CHGNet is not installed."""


def _optimizer():
    try:
        import torch
        from chgnet.model import StructOptimizer
    except ImportError as err:
        raise RelaxationUnavailable("--relax needs chgnet: pip install 'sfn-stream[data]'") from err
    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet announces itself on stdout (breaks --json)
        return StructOptimizer()


@contextlib.contextmanager
def _one_torch_thread():
    """Small cells: more threads only contend with the caller's other work. The caller's setting is restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def relax_structure(structure, optimizer=None, *, steps: int = RELAX_STEPS, fmax: float = RELAX_FMAX):
    """(relaxed structure, CHGNet energy per atom in eV, optimiser steps taken)."""
    optimizer = optimizer or _optimizer()
    with _one_torch_thread(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        result = optimizer.relax(structure.copy(), fmax=fmax, steps=steps, relax_cell=True, verbose=False)
    final = result["final_structure"]
    trajectory = result["trajectory"]
    energy = float(trajectory.energies[-1]) / len(final)
    return final, energy, len(trajectory.energies)


def relax_candidates(candidates, measured, wavelength: float, temperature: float, *, count: int = RELAX_TOP,
                     steps: int = RELAX_STEPS, fmax: float = RELAX_FMAX) -> list[str]:
    """Relax the first ``count`` candidates, refit their patterns, update score and components,
    re-rank them among themselves; returns notes.

    A relaxation can raise a hypothetical cell's symmetry (MnO in the HgO type relaxes to rock
    salt): crystal system and space group are found again on the relaxed cell (spglib, symprec
    0.1), and of two candidates that end as the same formula and space group the lower is dropped.
    """
    from ._pattern import coarse_scale, reflections, refine_fit, scaled_structure

    optimizer = _optimizer()
    notes = []
    for candidate in candidates[:count]:
        started = time.perf_counter()
        try:
            relaxed, energy, n_steps = relax_structure(candidate.structure, optimizer, steps=steps, fmax=fmax)
            refl = reflections(relaxed, candidate.crystal_system, q_max=float(measured.q[-1]) * 1.1)
            scale, _ = coarse_scale(refl, measured, wavelength)
            fit = refine_fit(refl, measured, wavelength, scale)
            symmetry = _symmetry(relaxed)
        except Exception as err:  # one failed relaxation leaves that candidate as it was
            why = f"{type(err).__name__}: {err}"
            notes.append(f"{candidate.formula} ({candidate.template_id}): relaxation failed: {why}")
            continue
        before = candidate.components["xrd_similarity"]
        candidate.components.update({
            "xrd_similarity_unrelaxed": before, "xrd_similarity": fit.similarity,
            "xrd_term": fit.similarity / temperature, "chgnet_energy_per_atom": energy,
        })
        candidate.score += (fit.similarity - before) / temperature
        candidate.fit = {**fit.to_dict(), "isotropic_scale": scale, "relaxed": True, "relax_steps": n_steps,
                         "relax_seconds": round(time.perf_counter() - started, 2),
                         "volume_change_on_relaxation": relaxed.volume / candidate.structure.volume - 1,
                         "unrelaxed_spacegroup": [candidate.spacegroup_symbol, candidate.spacegroup_number]}
        if symmetry is not None:
            candidate.crystal_system, candidate.spacegroup_symbol, candidate.spacegroup_number = symmetry
        candidate.structure = scaled_structure(relaxed, fit.axis_scales)
    candidates[:] = _deduplicated(sorted(candidates[:count], key=lambda c: -c.score) + candidates[count:], notes)
    for rank, c in enumerate(candidates, 1):
        c.rank = rank
    notes.append(f"CHGNet relaxation (fmax {fmax} eV/A, at most {steps} steps, cell free) of the top "
                 f"{min(count, len(candidates))} candidates; their patterns refitted")
    return notes


def _symmetry(structure) -> tuple[str, str, int] | None:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sga = SpacegroupAnalyzer(structure, symprec=0.1)
        return sga.get_crystal_system(), sga.get_space_group_symbol(), int(sga.get_space_group_number())
    except Exception:  # spglib can fail on a distorted cell: keep the template's symmetry
        return None


def _deduplicated(candidates, notes: list[str]):
    kept, seen = [], set()
    for c in candidates:
        key = (c.formula, c.spacegroup_number)
        if key in seen:
            notes.append(f"{c.formula} ({c.template_id}) relaxed into {c.spacegroup_symbol}, already ranked higher: dropped")
            continue
        seen.add(key)
        kept.append(c)
    return kept
