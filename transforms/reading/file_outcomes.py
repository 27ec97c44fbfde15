"""Reading outcomes with their file: rows become ``StoredRow``; errors and skips are
also filed, with the matched file's size and modification time, as ``MANIFEST`` entries.

The state (``transforms/output/state.py``) keeps both, so that a later run can tell
whether a file changed since its outcome was recorded.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

from transforms.common.tags import ERRORS, MANIFEST, SKIPPED
from transforms.inputs.archive_members import SEPARATOR


class StoredRow(NamedTuple):
    """A ``transforms.reading.flatten.Row`` plus the matched file's size and modification time."""

    path: str
    values: dict
    vrs: dict
    size: int | None
    mtime: float | None


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
