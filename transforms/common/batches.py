"""Buffering DoFns: elements gathered into lists, and lists written out when full.

``Buffered`` is the one buffer-and-flush pattern of the pipeline (batches of files, row
shards, outcome parts): it fills a buffer in ``process``, hands a full one to ``flush``,
and flushes the rest in ``finish_bundle`` into the global window (the only window this
pipeline uses). A retried bundle starts with an empty buffer. The steps whose flush
writes a file share ``output.spill.BufferedFiles``.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

# Files per extraction batch: Beam's per-element cost is paid once per batch.
BATCH_FILES = 64


def in_global_window(value):
    """``value`` as ``finish_bundle`` must emit it: windowed, in the global window."""
    return WindowedValue(value, GlobalWindow().max_timestamp(), [GlobalWindow()])


class Buffered(beam.DoFn):
    """Gathers elements; ``flush(list)`` returns what to emit for each full buffer: one
    of ``size`` elements or, with a ``budget``, one whose elements ``weigh`` that much."""

    def __init__(self, size: int, budget: int = 0):
        self.size = max(1, size)
        self.budget = budget
        self.buffer: list = []
        self.held = 0  # the buffer's weight

    def start_bundle(self):
        self.buffer, self.held = [], 0

    def add(self, element):
        """Buffer one element; returns the flushed output when the buffer is full."""
        self.buffer.append(element)
        if self.budget:
            self.held += self.weigh(element)
        if len(self.buffer) >= self.size or self.budget and self.held >= self.budget:
            buffer, self.buffer, self.held = self.buffer, [], 0
            return [self.flush(buffer)]
        return []

    def weigh(self, element) -> int:
        """What ``element`` counts against the ``budget`` (bytes, for instance)."""
        return 0

    def process(self, element):
        yield from self.add(element)

    def finish_bundle(self):
        if self.buffer:
            buffer, self.buffer, self.held = self.buffer, [], 0
            yield in_global_window(self.flush(buffer))

    def flush(self, buffer: list):
        raise NotImplementedError


class Batch(Buffered):
    """Elements -> lists of ``size`` of them (the last of a bundle may be shorter).

    Beam's ``BatchElements`` would do, but its SDK workers log a line of every batch's
    timings on the user's terminal; fixed-size batches need none of its tuning."""

    def flush(self, buffer: list):
        return buffer


class BatchFiles(beam.PTransform):
    """FileMetadata -> lists of up to ``size`` of them."""

    def __init__(self, size: int = BATCH_FILES):
        super().__init__()
        self.size = size

    def expand(self, files):
        return files | beam.ParDo(Batch(self.size))
