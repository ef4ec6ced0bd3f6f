"""External data: rows that detectors write to files, announced by StreamResource/StreamDatum.

Supported: HDF5 (``application/x-hdf5``, ``parameters.dataset``), the layout ophyd-async
detectors write. The raw documents are forwarded untouched; this only reads the rows back
so that predictions can be made from them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import numpy as np

HDF5_MIMETYPES = ("application/x-hdf5", "application/x-hdf5-smwr-slice")


class ExternalDataError(RuntimeError):
    """External rows cannot be read (unsupported format, missing file or dataset)."""


class ExternalArrays:
    """The external rows of one run, by role: resources and descriptors registered as they come."""

    def __init__(self):
        self._resources: dict[str, dict[str, Any]] = {}
        self._roles_by_key: dict[str, str] = {}

    def register_descriptor(self, descriptor: dict, keys: dict[str, str]) -> None:
        """Remember which external data keys play which role."""
        for role, key in keys.items():
            if "external" in descriptor["data_keys"].get(key, {}):
                self._roles_by_key[key] = role

    def register_resource(self, doc: dict) -> None:
        self._resources[doc["uid"]] = doc

    def read(self, stream_datum: dict) -> dict[str, list[np.ndarray]]:
        resource = self._resources.get(stream_datum["stream_resource"])
        if resource is None:
            raise ExternalDataError(f"StreamDatum refers to unknown StreamResource {stream_datum['stream_resource']}")
        role = self._roles_by_key.get(resource["data_key"])
        if role is None:
            return {}
        start, stop = stream_datum["indices"]["start"], stream_datum["indices"]["stop"]
        return {role: list(_read_rows(resource, start, stop))}


def _read_rows(resource: dict, start: int, stop: int) -> np.ndarray:
    mimetype = resource.get("mimetype", "")
    if mimetype not in HDF5_MIMETYPES:
        raise ExternalDataError(f"external data of type {mimetype!r} cannot be read (supported: HDF5)")
    import h5py

    path = urlparse(resource["uri"]).path
    dataset = resource.get("parameters", {}).get("dataset")
    if not dataset:
        raise ExternalDataError(f"StreamResource {resource['uid']} names no HDF5 dataset")
    try:
        with h5py.File(path, "r", swmr=True) as fh:
            return np.asarray(fh[dataset][start:stop])
    except (OSError, KeyError) as err:
        raise ExternalDataError(f"cannot read {dataset} rows {start}:{stop} from {path}: {err}") from err
