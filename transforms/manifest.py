"""Manifest: the record, kept next to the output, of every file the output covers.

Layout for ``-o scan.csv``::

    scan.state/CURRENT               name of the generation that scan.csv was built from
    scan.state/gen-<runid>/          one generation (one run)
        settings.json                what the rows depend on (flatten settings, code hash)
        rows-<id>.pickle             spilled rows (the row store)
        rows-<id>.pickle.manifest    (path, size, mtime, VRs) of each row of that shard
        outcomes-<id>.manifest       (path, size, mtime, kind, record) of errors and skips
        GENERATION.json              written last: counts and the shard list

A run writes a new generation and, only once the CSV, errors, skipped and summary are in
place, points ``CURRENT`` at it (``CURRENT.partial`` renamed over ``CURRENT``) and
deletes every other generation. A killed run therefore never touches the generation
``CURRENT`` names; what it leaves is a generation without ``CURRENT`` whose completed
parts (a part exists only once complete) the next run reuses.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

import transforms.archive_members as archive_members_module
import transforms.extract as extract_module
import transforms.flatten as flatten_module
from transforms.archive_members import SEPARATOR
from transforms.extract import ERRORS, SKIPPED
from transforms.rowstore import SIDECAR_SUFFIX, STORE_VERSION, StoredRow, write_atomically

MANIFEST = "manifest"
CURRENT = "CURRENT"
SETTINGS = "settings.json"
GENERATION = "GENERATION.json"
# Error/skip entries per outcome part: a killed run loses at most this many per worker.
ENTRIES_PER_PART = 2000


def code_fingerprint() -> str:
    """Hash of the code that turns a file into a row: rows kept by other code are stale."""
    digest = hashlib.sha256()
    sources = [module.__file__ for module in (flatten_module, extract_module,
                                               archive_members_module)]
    # transforms/archives.py imports this module, so it is hashed by its path.
    sources.append(os.path.join(os.path.dirname(flatten_module.__file__), "archives.py"))
    for source in sources:
        with open(source, "rb") as stream:
            digest.update(stream.read())
    return digest.hexdigest()[:16]


def _read_text(path: str) -> str | None:
    try:
        with FileSystems.open(path) as stream:
            return stream.read().decode("utf-8")
    except Exception:  # pylint: disable=broad-except  # missing or unreadable
        return None


def _write_text(path: str, text: str) -> None:
    partial = path + ".partial"
    with FileSystems.create(partial) as out:
        out.write(text.encode("utf-8"))
    FileSystems.rename([partial], [path])


@dataclass(frozen=True)
class RunState:
    """Where this run keeps its manifest, and which earlier parts it may reuse."""

    state_dir: str
    generation: str  # this run's generation directory
    incremental: bool
    previous: str | None  # generation CURRENT names, when this run reuses it
    parts: tuple  # (rank, manifest part path): rank 0 = previous, 1.. = interrupted runs
    note: str

    @property
    def reusing(self) -> bool:
        return bool(self.parts)


def state_dir_for(table: str) -> str:
    stem = table[: -len(".csv")] if table.lower().endswith(".csv") else table
    return stem + ".state"


def run_id_of(temp_dir: str) -> str:
    """The run's id, taken from its temp dir ``.<stem>.tmp-<runid>`` when it has one."""
    name = FileSystems.split(temp_dir.rstrip("/"))[1]
    if ".tmp-" in name:
        return name.rsplit(".tmp-", 1)[1]
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


def prepare_state(table: str, temp_dir: str, settings, incremental: bool,
                  read_archives: bool = True) -> RunState:
    """At launch: create this run's generation and list what earlier runs left to reuse.

    The generation ``CURRENT`` names is reused only with ``--incremental``; generations
    of interrupted runs (no ``CURRENT`` points at them) are always reused, since their
    rows were made by the same code and settings from files that still match."""
    state_dir = state_dir_for(table)
    generation = FileSystems.join(state_dir, f"gen-{run_id_of(temp_dir)}")
    fingerprint = {
        "store_version": STORE_VERSION,
        "code": code_fingerprint(),
        "include_private": settings.include_private,
        "max_sequence_items": settings.max_sequence_items,
        "max_binary_bytes": settings.max_binary_bytes,
        "read_archives": read_archives,
    }
    current_name = (_read_text(FileSystems.join(state_dir, CURRENT)) or "").strip()
    found = FileSystems.match([FileSystems.join(state_dir, "gen-*", SETTINGS)])[0]
    others = sorted(
        (FileSystems.split(meta.path)[0] for meta in found.metadata_list), reverse=True
    )
    _write_text(FileSystems.join(generation, SETTINGS), json.dumps(fingerprint, indent=2))

    notes, sources, previous = [], [], None
    for rank, directory in enumerate(others, start=1):
        name = FileSystems.split(directory)[1]
        is_current = name == current_name
        if is_current and not incremental:
            continue
        settings_text = _read_text(FileSystems.join(directory, SETTINGS))
        if settings_text is None or json.loads(settings_text) != fingerprint:
            notes.append(f"{name}: made with other settings or code, not reused")
            continue
        if is_current:
            previous = directory
            sources.append((0, directory))
        else:
            sources.append((rank, directory))
    if incremental and previous is None:
        notes.append("no usable previous output: every file is extracted")
    parts = []
    for rank, directory in sources:
        pattern = FileSystems.join(directory, "*" + SIDECAR_SUFFIX)
        parts.extend((rank, meta.path) for meta in FileSystems.match([pattern])[0].metadata_list)
    return RunState(state_dir, generation, incremental, previous, tuple(sorted(parts)),
                    "; ".join(notes))


# ---------------------------------------------------------------------------
# During extraction: keep each file's size and mtime with its outcome.


def _file_info(file_metadata) -> tuple:
    return file_metadata.size_in_bytes, file_metadata.last_updated_in_seconds


def skip_record(entry) -> tuple:
    """A manifest entry ``(path, size, mtime, kind, details)`` of a reused non-DICOM skip,
    as the ``(path, reason)`` record the extraction's ``SKIPPED`` output gives."""
    path, _size, _mtime, _kind, details = entry
    return (path,) + tuple(details)


def skip_records(entry):
    """``skip_record`` of the reused entries that are skips (not archive listings)."""
    if entry[3] == "skipped":
        yield skip_record(entry)


class KeepFileMetadata(beam.DoFn):
    """Wraps the extraction DoFn: rows become ``StoredRow``; errors and skips also go,
    with size and mtime, to the ``MANIFEST`` output. Outputs are matched to their file by
    path, so it works whether the wrapped DoFn emits in ``process`` or ``finish_bundle``."""

    def __init__(self, extract: beam.DoFn):
        self.extract = extract
        self.pending: dict = {}

    def setup(self):
        self.extract.setup()

    def start_bundle(self):
        self.pending = {}
        self.extract.start_bundle()

    def process(self, file_metadata):
        self.pending[file_metadata.path] = _file_info(file_metadata)
        for output in self.extract.process(file_metadata) or ():
            yield from self._attach(output)

    def finish_bundle(self):
        for output in self.extract.finish_bundle() or ():
            yield from self._attach(output)

    def teardown(self):
        self.extract.teardown()

    def _file_info(self, path: str) -> tuple:
        info = self.pending.pop(path, None)
        if info is None:  # an archive member: filed under its archive's size and mtime
            start = path.find(SEPARATOR)
            while info is None and start >= 0:
                info = self.pending.get(path[:start])
                start = path.find(SEPARATOR, start + 1)
        if info is None:
            raise KeyError(f"no matched file for the outcome of {path}")
        return info

    def _attach(self, output):
        windowed = isinstance(output, WindowedValue)
        value = output.value if windowed else output
        results = []
        if isinstance(value, beam.pvalue.TaggedOutput):
            record = value.value
            kind = "error" if value.tag == ERRORS else "skipped" if value.tag == SKIPPED else None
            results.append(value)  # other outputs (archives found) pass as they are
            if kind is not None:
                size, mtime = self._file_info(record[0])
                results.append(beam.pvalue.TaggedOutput(
                    MANIFEST, (record[0], size, mtime, kind, tuple(record[1:]))
                ))
        else:
            size, mtime = self._file_info(value.path)
            results.append(StoredRow(value.path, value.values, value.vrs, size, mtime))
        for result in results:
            if windowed:
                if isinstance(result, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(result.tag, output.with_value(result.value))
                else:
                    yield output.with_value(result)
            else:
                yield result


class WriteOutcomes(beam.DoFn):
    """Error/skip entries -> ``outcomes-<id>.manifest`` parts; outputs each part's path."""

    def __init__(self, generation: str):
        self.generation = generation
        self.entries: list = []

    def start_bundle(self):
        self.entries = []

    def process(self, entry):
        self.entries.append(entry)
        if len(self.entries) >= ENTRIES_PER_PART:
            yield self._write()

    def finish_bundle(self):
        if self.entries:
            yield WindowedValue(self._write(), GlobalWindow().max_timestamp(), [GlobalWindow()])

    def _write(self) -> str:
        path = FileSystems.join(self.generation, f"outcomes-{uuid.uuid4().hex}{SIDECAR_SUFFIX}")
        write_atomically(path, {"kind": "outcomes", "version": STORE_VERSION,
                                "entries": self.entries})
        self.entries = []
        return path


# ---------------------------------------------------------------------------
# After the report: switch CURRENT, then clear what is no longer needed.


def _stale_temp_dirs(table: str, own_temp_dir: str) -> list[str]:
    """Temp dirs of interrupted runs (local outputs only: buckets hold no directories)."""
    if "://" in table:
        return []
    stem = table[: -len(".csv")] if table.lower().endswith(".csv") else table
    directory, name = os.path.split(stem)
    pattern = os.path.join(glob.escape(directory or "."), f".{glob.escape(name)}.tmp-*")
    return [path for path in glob.glob(pattern) if os.path.abspath(path) != os.path.abspath(own_temp_dir)]


def commit_state(summary, state: RunState, temp_dir: str, shards, parts) -> dict:
    """Make this run's generation the one ``CURRENT`` names; delete the others."""
    record = {
        "committed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "summary": summary,
        "row_shards": sorted(FileSystems.split(shard.path)[1] for shard in shards),
        "outcome_parts": sorted(FileSystems.split(path)[1] for path in parts),
    }
    _write_text(FileSystems.join(state.generation, GENERATION),
                json.dumps(record, indent=2, default=str))
    generation_name = FileSystems.split(state.generation)[1]
    _write_text(FileSystems.join(state.state_dir, CURRENT), generation_name + "\n")
    # CURRENT now names the new generation: everything else is garbage.
    found = FileSystems.match([FileSystems.join(state.state_dir, "gen-*", SETTINGS)])[0]
    old = {FileSystems.split(meta.path)[0] for meta in found.metadata_list}
    old.discard(state.generation)
    stale = sorted(old) + _stale_temp_dirs(summary["table"], temp_dir)
    for path in stale:
        try:
            FileSystems.delete([path])
        except Exception:  # pylint: disable=broad-except  # retried by the next run
            pass
    return summary
