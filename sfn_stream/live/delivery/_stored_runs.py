"""Write sfn-stream's derived stream and ``stop['sfn']`` summary into a run that Tiled already stores.

    written = write_derived_into_stored_run(client, run_uid, derived_docs, summary)

``derived_docs`` are the descriptor and event documents a ``RunProcessor`` emitted for the derived
streams (``sfn_*``), ``summary`` the run's stop summary. The streams are written by
bluesky_tiled_plugins' own run writer (the code TiledWriter runs live, ``max_array_size=0`` as in
``make_tiled_writer``), so they read back exactly like streams written during the run. The stop is
replaced last: a run that has its ``stop['sfn']`` has its derived streams too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from sfn_stream.live.documents import METADATA_KEY, stop_with_summary

DocumentPair = tuple[str, Mapping]


class StoredRunError(RuntimeError):
    """The run is not in Tiled, or cannot take a derived stream (no stop document yet)."""


def write_derived_into_stored_run(client, run_uid: str, derived_docs: Iterable[DocumentPair],
                                  summary: Mapping, *, force: bool = False,
                                  metadata_key: str = METADATA_KEY) -> bool:
    """Add the derived streams and the summary to the stored run ``run_uid``, in place.

    Returns False, changing nothing, when the run already has ``stop[metadata_key]`` and every
    derived stream named in ``derived_docs`` (unless ``force``). Otherwise the named streams are
    replaced (never appended to: a stream left by an interrupted write is rewritten whole), then the
    stored stop gains the summary and the derived event counts; returns True.
    """
    try:
        run = client.include_data_sources()[run_uid]
    except KeyError:
        raise StoredRunError(f"no run {run_uid} in Tiled") from None
    return write_derived_into_run(run, derived_docs, summary, force=force, metadata_key=metadata_key)


def write_derived_into_run(run, derived_docs: Iterable[DocumentPair], summary: Mapping, *, force: bool = False,
                           metadata_key: str = METADATA_KEY) -> bool:
    """:func:`write_derived_into_stored_run` for a run node already looked up (``client[run_uid]``)."""
    derived_docs = [(name, doc) for name, doc in derived_docs if name in ("descriptor", "event", "event_page")]
    stop = run.metadata.get("stop")
    if not stop:
        raise StoredRunError(f"run {run.metadata.get('start', {}).get('uid')} has no stop document in Tiled yet")
    streams = _event_counts(derived_docs)
    root = run.base if hasattr(run, "base") else run  # the plain container: one lookup per key
    present = {stream for stream in streams if stream in root}
    if not force and metadata_key in stop and present == set(streams):
        return False
    if present:
        root.delete_contents(sorted(present), recursive=True, external_only=False)
    notes = _write_streams(root, derived_docs, streams)
    new_stop = stop_with_summary(dict(stop), dict(summary), metadata_key, streams)
    patch = [{"op": "add", "path": "/stop", "value": new_stop}]
    if notes:
        stored_notes = list(run.metadata.get("notes") or [])
        patch.append({"op": "add", "path": "/notes", "value": list(dict.fromkeys(stored_notes + notes))})
    root.patch_metadata(metadata_patch=patch, drop_revision=True)
    return True


def _event_counts(docs: list[DocumentPair]) -> dict[str, int]:
    """Events per derived stream (every stream named by a descriptor, even one with no event)."""
    names = {doc["uid"]: doc["name"] for name, doc in docs if name == "descriptor"}
    counts = Counter({stream: 0 for stream in names.values()})
    for name, doc in docs:
        if name == "event":
            counts[names[doc["descriptor"]]] += 1
        elif name == "event_page":
            counts[names[doc["descriptor"]]] += len(doc["seq_num"])
    return dict(counts)


def _write_streams(root, docs: list[DocumentPair], event_counts: Mapping[str, int]) -> list[str]:
    """Write the streams into the run's container as TiledWriter does live; the writers' notes.

    One writer per stream, whose batch is the stream's whole set of rows: they go in one append, as
    TiledWriter's do at a live stop (column types are inferred from every row, not from the first).
    """
    from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer, _RunWriter

    stream_of = {doc["uid"]: doc["name"] for name, doc in docs if name == "descriptor"}
    notes: list[str] = []
    for stream, count in event_counts.items():
        writer = _RunWriter(root, batch_size=max(1, count), max_array_size=0)
        writer.root_node = root
        normalizer = RunNormalizer()
        normalizer.subscribe(writer)
        for name, doc in docs:
            if stream_of[doc["uid"] if name == "descriptor" else doc["descriptor"]] == stream:
                normalizer(name, doc)
        writer._close_stream_tree()  # end of writes to the new nodes (and the run again), as at a live stop
        notes += normalizer.notes + writer.notes
    return notes
