"""Merge: the shape both table writers share.

Each shard is formatted in parallel against the global column list (a side input);
then a single step merges all formatted parts into the output file and emits one
result, which later steps wait on.
"""

from __future__ import annotations

import resource
from typing import Callable

import apache_beam as beam


def allow_open_files(count: int) -> None:
    """A k-way merge keeps every part open at once; raise the soft limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class FormatThenMerge(beam.PTransform):
    """(shards, columns) -> the single result of ``merge(parts, columns)``."""

    def __init__(self, format_shard: beam.DoFn, merge: Callable):
        super().__init__()
        self.format_shard = format_shard
        self.merge = merge

    def expand(self, shards_and_columns):
        shards, columns = shards_and_columns
        parts = shards | "Format" >> beam.ParDo(
            self.format_shard, beam.pvalue.AsSingleton(columns)
        )
        merge = self.merge
        return (
            shards.pipeline
            | "Once" >> beam.Create([None])
            | "Merge" >> beam.Map(
                lambda _, parts, columns: merge(parts, columns),
                beam.pvalue.AsList(parts),
                beam.pvalue.AsSingleton(columns),
            )
        )
