"""Model bundles: a folder with ``card.json`` (the model card) and ``weights.pt``.

The bundle id names the card's name and version plus the first 12 hex digits of the
weights' SHA-256, so that every prediction can be traced to the exact weights used. The card
records that SHA-256 (``weights_sha256``) and a bundle whose weights do not match it refuses to
load: a valid but wrong ``weights.pt`` would otherwise predict with ``status: ok``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from sfn_stream.core.files import file_sha256
from sfn_stream.core.paths import models_dir  # noqa: F401 (re-exported: where bundles live)

CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.pt"

# Required keys of a model card; anything else is free-form but should be JSON.
CARD_KEYS = (
    "name",  # e.g. "xanes-specfusion"
    "version",  # semantic version of the bundle
    "kind",  # "xanes" or "xrd"
    "created",  # ISO date
    "training_data",  # {"description": ..., "sha256": ..., "n_train": ..., ...}
    "label_sources",  # {"oxidation_state": "pymatgen BVAnalyzer ...", ...}
    "preprocessing",  # the preprocessing definition the model expects
    "architecture",  # constructor arguments of the network
    "tasks",  # task name -> {"type": "classification"|"regression", ...}
    "metrics",  # held-out metrics, named by split
    "weights_sha256",  # SHA-256 of weights.pt, checked at every load
)


class BundleError(ValueError):
    """A model bundle is missing, incomplete, unreadable or does not match its card (a ValueError: bad
    input, which the command line reports in one line with exit status 2)."""


@dataclass(frozen=True)
class ModelBundle:
    path: Path
    card: dict[str, Any] = field(compare=False, hash=False)
    weights_sha256: str

    @property
    def id(self) -> str:
        return f"{self.card['name']}@{self.card['version']}+{self.weights_sha256[:12]}"

    def load_weights(self) -> dict[str, Any]:
        import torch

        return torch.load(self.path / WEIGHTS_FILE, map_location="cpu", weights_only=True)


def load_bundle(path: str | os.PathLike) -> ModelBundle:
    """Read a bundle's card and hash its weights (cached per path and modification time)."""
    path = Path(path).resolve()
    card_path, weights_path = path / CARD_FILE, path / WEIGHTS_FILE
    for required in (card_path, weights_path):
        if not required.is_file():
            raise BundleError(f"model bundle {path} has no {required.name}")
    return _load_bundle_cached(path, card_path.stat().st_mtime_ns, weights_path.stat().st_mtime_ns)


@lru_cache(maxsize=16)
def _load_bundle_cached(path: Path, _card_mtime: int, _weights_mtime: int) -> ModelBundle:
    try:
        card = json.loads((path / CARD_FILE).read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"model card {path / CARD_FILE} is not valid JSON: {err}") from err
    missing = [key for key in CARD_KEYS if key not in card]
    if missing:
        raise BundleError(f"model card {path / CARD_FILE} lacks {', '.join(missing)}")
    actual = file_sha256(path / WEIGHTS_FILE)
    if actual != card["weights_sha256"]:
        raise BundleError(f"{path / WEIGHTS_FILE} does not match its model card (SHA-256 {actual[:12]}..., the card "
                          f"says {str(card['weights_sha256'])[:12]}...): the weights were changed or damaged; "
                          "restore them or retrain the bundle")
    return ModelBundle(path=path, card=card, weights_sha256=actual)


def load_member(bundle: ModelBundle, role: str, rebuild: str) -> ModelBundle:
    """The member bundle ``role`` that ``bundle``'s card names (a sibling folder), refused when its weights are not
    the ones ``bundle`` was fitted with (``rebuild``: the command that fits it again)."""
    entry = bundle.card["architecture"]["members"][role]
    member = load_bundle(Path(bundle.path).parent / entry["bundle"])
    if member.weights_sha256 != entry["weights_sha256"]:
        raise BundleError(f"{bundle.id}: its {role} member {member.id} is not the one it was calibrated with "
                          f"(weights {entry['weights_sha256'][:12]}): rebuild it ({rebuild})")
    return member


def save_bundle(path: str | os.PathLike, card: dict[str, Any], weights: dict[str, Any]) -> ModelBundle:
    """Write ``weights`` (a dict of tensors / state dicts) and ``card``; return the loaded bundle."""
    import torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(weights, path / WEIGHTS_FILE)
    card = {**card, "weights_sha256": file_sha256(path / WEIGHTS_FILE)}
    missing = [key for key in CARD_KEYS if key not in card]
    if missing:
        raise BundleError(f"model card lacks {', '.join(missing)}")
    (path / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return load_bundle(path)
