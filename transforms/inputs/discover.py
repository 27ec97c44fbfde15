"""Discovery: every file under the inputs, spread over workers.

An input is a directory or bucket prefix (walked recursively), a single file, or a glob.
Nothing is filtered by name here: DICOM is recognised by content during extraction.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystem import FileSystem
from apache_beam.metrics import Metrics

from transforms.common.batches import BatchFiles
from transforms.inputs.match import MatchAll, to_pattern
from transforms.common.paths import escape
from transforms.inputs.storage import PrepareStorage

# Files per shuffled element when spreading one input's files over the workers: small
# enough that a few thousand files still make work for every worker.
SPREAD_BATCH = 128


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
            # Grouping by path drops files that two inputs both match, and, like a
            # Reshuffle, spreads the files (matched on one worker) over all workers.
            spread = (
                matched
                | "KeyByPath" >> beam.Map(lambda metadata: (metadata.path, metadata))
                | "Deduplicate" >> beam.GroupByKey()
                | "First" >> beam.Map(lambda path_metadata: next(iter(path_metadata[1])))
            )
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
