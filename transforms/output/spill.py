"""Spill: rows go to row shards as they are extracted; only ``ShardInfo`` flows on.

The column set is known only once every file has been read, so rows wait on disk, in
the shard format (``shard_format.py``), inside this run's state generation: the same
files are the table writers' input and the next run's row store. Each worker buffers at
most ``rows_per_shard`` rows, sorts them by path and writes one shard under a name no
other attempt uses (``rows-<uuid>.parquet``): a bundle that runs twice writes two
shards, and only the ``ShardInfo`` of the attempt the runner keeps reaches the tables.

Errors and non-DICOM skips, with the file's size and mtime, go to outcome parts
(``outcomes-<uuid>.parquet``, see ``state.py``) the same way.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.archive_members import SEPARATOR
from transforms.extract import ERRORS, SKIPPED
from transforms.output import shard_format
from transforms.output.state import write_outcomes

MANIFEST = "manifest"
# Error/skip entries per outcome part: a killed run loses at most this many per worker.
ENTRIES_PER_PART = 2000


class StoredRow(NamedTuple):
    """A ``transforms.flatten.Row`` plus the matched file's size and modification time."""

    path: str
    values: dict
    vrs: dict
    size: int | None
    mtime: float | None


def new_shard_path(directory: str) -> str:
    return FileSystems.join(directory, f"rows-{uuid.uuid4().hex}{shard_format.SUFFIX}")


def _in_global_window(value):
    return WindowedValue(value, GlobalWindow().max_timestamp(), [GlobalWindow()])


class SpillRows(beam.DoFn):
    """StoredRow -> nothing per row; a ``ShardInfo`` each time a shard is written."""

    def __init__(self, directory: str, rows_per_shard: int = 5000):
        self.directory = directory
        self.rows_per_shard = max(1, rows_per_shard)
        self.rows: list = []

    def setup(self):
        from transforms import beam_internals

        beam_internals.prepare_filesystems()

    def start_bundle(self):
        self.rows = []

    def process(self, row):
        self.rows.append(row)
        if len(self.rows) >= self.rows_per_shard:
            yield self._write()

    def finish_bundle(self):
        if self.rows:
            yield _in_global_window(self._write())

    def _write(self):
        rows, self.rows = self.rows, []
        return shard_format.write_shard(new_shard_path(self.directory), rows)


def _file_info(file_metadata) -> tuple:
    return file_metadata.size_in_bytes, file_metadata.last_updated_in_seconds


class KeepFileMetadata(beam.DoFn):
    """Wraps the extraction DoFn: rows become ``StoredRow``; errors and skips also go,
    with size and mtime, to the ``MANIFEST`` output as ``(path, size, mtime, kind,
    details)``. Outputs are matched to their file by path, so it works whether the
    wrapped DoFn emits in ``process`` or ``finish_bundle``."""

    def __init__(self, extract: beam.DoFn):
        self.extract = extract
        self.pending: dict = {}

    def setup(self):
        self.extract.setup()

    def start_bundle(self):
        self.pending = {}
        self.extract.start_bundle()

    def process(self, files):
        for file_metadata in files if isinstance(files, list) else [files]:  # a batch
            self.pending[file_metadata.path] = _file_info(file_metadata)
        for output in self.extract.process(files) or ():
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
        if isinstance(value, beam.pvalue.TaggedOutput) and value.tag not in (ERRORS, SKIPPED):
            results.append(value)  # not an outcome (reader's counts, archives found, ...)
        elif isinstance(value, beam.pvalue.TaggedOutput):
            record = value.value
            size, mtime = self._file_info(record[0])
            kind = "error" if value.tag == ERRORS else "skipped" if value.tag == SKIPPED else None
            results.append(value)
            if kind is not None:
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
    """Error/skip entries -> ``outcomes-<uuid>.parquet`` parts; outputs each part's path."""

    def __init__(self, directory: str):
        self.directory = directory
        self.entries: list = []

    def setup(self):
        from transforms import beam_internals

        beam_internals.prepare_filesystems()

    def start_bundle(self):
        self.entries = []

    def process(self, entry):
        self.entries.append(entry)
        if len(self.entries) >= ENTRIES_PER_PART:
            yield self._write()

    def finish_bundle(self):
        if self.entries:
            yield _in_global_window(self._write())

    def _write(self) -> str:
        entries, self.entries = self.entries, []
        path = FileSystems.join(self.directory, f"outcomes-{uuid.uuid4().hex}.parquet")
        write_outcomes(path, entries)
        return path
