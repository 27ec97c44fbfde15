"""Discovery: every file under the inputs, spread over workers.

An input is a directory or bucket prefix (walked recursively), a single file, or a glob.
Nothing is filtered by name here: DICOM is recognised by content during extraction.
"""

from __future__ import annotations

import zlib

import apache_beam as beam
from apache_beam.io.filesystem import FileSystem
from apache_beam.metrics import Metrics

from transforms.common.batches import BatchFiles, in_global_window
from transforms.inputs.match import MatchAll, to_pattern
from transforms.common.paths import escape
from transforms.inputs.storage import PrepareStorage

# Files per shuffled element when spreading one input's files over the workers: small
# enough that a few thousand files still make work for every worker.
SPREAD_BATCH = 128
# Keys of the de-duplication: a path always falls in the same one, and enough of them
# spread the grouping over every worker of a large machine.
DEDUPE_KEYS = 1024


def dedupe_key(path: str) -> int:
    """The de-duplication key of ``path``: the same on every worker and every run."""
    return zlib.crc32(path.encode("utf-8")) % DEDUPE_KEYS


class _BatchByKey(beam.DoFn):
    """FileMetadata -> (dedupe key, list of up to ``size`` FileMetadata with that key):
    the shuffle moves one element per batch, not one per file."""

    def __init__(self, size: int = SPREAD_BATCH):
        self.size = size
        self.batches: dict = {}

    def start_bundle(self):
        self.batches = {}

    def process(self, metadata):
        key = dedupe_key(metadata.path)
        batch = self.batches.setdefault(key, [])
        batch.append(metadata)
        if len(batch) >= self.size:
            del self.batches[key]
            yield key, batch

    def finish_bundle(self):
        batches, self.batches = self.batches, {}
        for key, batch in batches.items():
            yield in_global_window((key, batch))


def _distinct(key_batches):
    """One FileMetadata per path of a key's batches (the first seen: two patterns that
    match a file give the same metadata)."""
    seen = set()
    for batch in key_batches[1]:
        for metadata in batch:
            if metadata.path not in seen:
                seen.add(metadata.path)
                yield metadata


class Deduplicate(beam.PTransform):
    """FileMetadata, some of them twice -> each path once, spread over the workers."""

    def __init__(self, size: int = SPREAD_BATCH):
        super().__init__()
        self.size = size

    def expand(self, files):
        return (
            files
            | "BatchByKey" >> beam.ParDo(_BatchByKey(self.size))
            | "Group" >> beam.GroupByKey()
            | "Distinct" >> beam.FlatMap(_distinct)
        )


class _CountMatched(beam.DoFn):
    def __init__(self, progress=None):
        self.progress = progress
        self.matched = Metrics.counter("dicom", "matched")

    def setup(self):
        if self.progress is not None:
            self.progress.connect()

    def process(self, file_metadata: FileSystem):
        self.matched.inc()
        if self.progress is not None:
            self.progress.matched(1)
        yield file_metadata

    def finish_bundle(self):
        if self.progress is not None:
            self.progress.flush()


class MatchInputs(beam.PTransform):
    """Input paths -> FileMetadata of every distinct file they hold, spread over workers."""

    def __init__(self, inputs, progress=None):
        super().__init__()
        # Escaped: beam.Create encodes them, and a non-UTF-8 name would not encode.
        self.patterns = [escape(to_pattern(path)) for path in inputs]
        self.progress = progress

    def expand(self, pbegin):
        matched = (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "Storage" >> beam.ParDo(PrepareStorage())  # before the first bucket call
            # Paths come out escaped (transforms/common/paths.py), special files included.
            | "Match" >> MatchAll()
        )
        if len(self.patterns) > 1:
            # Grouping by a key of the path drops files that two inputs both match,
            # and, like a Reshuffle, spreads the files over all workers.
            spread = matched | "Deduplicate" >> Deduplicate()
        else:
            # One pattern matches each file once: spread the files over the workers in
            # batches, so the shuffle costs one element per batch instead of per file.
            spread = (
                matched
                | "Batch" >> BatchFiles(SPREAD_BATCH)
                | "Spread" >> beam.Reshuffle()
                | "Unbatch" >> beam.FlatMap(lambda batch: batch)
            )
        return spread | "Count" >> beam.ParDo(_CountMatched(self.progress))
