"""A stored run's Bluesky documents: from the server's BlueskyRun exporter, or read from its stream tables.

A server started by ``sfn-stream serve`` exports them (``client[uid].documents()``); a server
without the exporter answers 406, and the run is then rebuilt here from what any Tiled client can
read: the start and stop metadata, each stream's descriptor (its node's metadata), the rows of its
``internal`` table and its array nodes. Detector data in external files (StreamResource) needs the
exporter.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from sfn_stream.live.delivery import StoredRunError


def stored_documents(run) -> Iterator[tuple[str, dict]]:
    """The run's documents in order (start first, stop last)."""
    import httpx

    try:
        yield from run.documents()
    except httpx.HTTPStatusError as err:
        if err.response.status_code != 406:
            raise
        yield from documents_from_streams(run)


def documents_from_streams(run) -> Iterator[tuple[str, dict]]:
    """The run's documents rebuilt from its stream nodes (what the exporter does on the server)."""
    from bluesky_tiled_plugins.exporters import build_descriptor_docs

    start, stop = dict(run.metadata["start"]), run.metadata.get("stop")
    root = _container(run)
    documents = []
    for stream in root:
        node = _container(root[stream])
        metadata = _plain(node.metadata)
        external = [key for key, spec in metadata.get("data_keys", {}).items() if "external" in spec]
        if external:
            raise StoredRunError(f"stream {stream!r} keeps {', '.join(external)} in external files: reading them "
                                 "needs the server's Bluesky document exporter")
        descriptors = build_descriptor_docs(metadata, stream_name=stream, run_start_uid=start["uid"])
        documents += [("descriptor", descriptor) for descriptor in descriptors]
        documents += _events(node, descriptors)
    documents.sort(key=lambda pair: pair[1]["time"])
    yield "start", start
    yield from documents
    if stop:
        yield "stop", _plain(stop)


def _events(node, descriptors: list[dict]) -> list[tuple[str, dict]]:
    """One event per row of the stream's table, its array nodes' values merged in."""
    rows: dict[int, dict] = {}
    if "internal" in node:
        table = node["internal"].read()
        values = [k for k in table.columns if k not in ("seq_num", "time") and not k.startswith("ts_")]
        for record in table.to_dict(orient="records"):
            rows[int(record["seq_num"])] = {
                "time": float(record["time"]),
                "data": {k: _builtin(record[k]) for k in values},
                "timestamps": {k[3:]: float(record[k]) for k in table.columns if k.startswith("ts_")},
            }
    for key in node:
        if key == "internal":
            continue
        for seq_num, value in zip(sorted(rows) or range(1, 10**9), node[key].read()):
            row = rows.setdefault(seq_num, {"time": 0.0, "data": {}, "timestamps": {}})
            row["data"][key] = _builtin(value)
            row["timestamps"].setdefault(key, row["time"])
    events = []
    for seq_num in sorted(rows):
        row = rows[seq_num]
        descriptor = [d for d in descriptors if d["time"] <= row["time"]][-1:] or descriptors[:1]
        timestamps = {k: v for k, v in row["timestamps"].items() if k in row["data"]}
        events.append(("event", {"uid": f"event-{descriptor[0]['uid']}-{seq_num}", "descriptor": descriptor[0]["uid"],
                                 "seq_num": seq_num, "time": row["time"], "data": row["data"],
                                 "timestamps": timestamps}))
    return events


def _container(node):
    """The plain container under a BlueskyRun or stream client (whose keys are the nodes themselves)."""
    return node.base if hasattr(node, "base") else node


def _builtin(value):
    if isinstance(value, np.ndarray):
        return [_builtin(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def _plain(mapping):
    """Tiled's read-only metadata views as plain dicts and lists."""
    if hasattr(mapping, "items"):
        return {key: _plain(value) for key, value in mapping.items()}
    if isinstance(mapping, (list, tuple)):
        return [_plain(value) for value in mapping]
    return mapping
