"""The path order cut into ranges of rows, each range a slice of every shard: how the
steps that write a table in parts (``table_parts.py``: the CSV and JSON lines;
``nested_parts.py``: the nested dataset) share the rows out to workers.

One step reads only the ``DicomPath`` column of every shard and ranks every row. Range k
holds the rows ranked k*N .. (k+1)*N-1; since every shard is sorted by path, that is one
slice of rows ``start:stop`` of each shard (``shard_merge.ShardSlice``). The same rows
give the same ranges whatever the runner, the workers or the sharding.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.common.rows import PATH_COLUMN
from transforms.output.shard_merge import ShardSlice, open_shard_file


def shard_paths(shard) -> pa.Array:
    """Every ``DicomPath`` of a shard, in its order."""
    stream, parquet = open_shard_file(shard.path, shard.size)
    try:
        paths = parquet.read(columns=[PATH_COLUMN]).column(0).combine_chunks()
    finally:
        stream.close()
    if len(paths) != shard.rows:
        raise RuntimeError(f"{shard.path} holds {len(paths)} rows, not {shard.rows}")
    return paths


def cut_ranges(shards, rows_per_range) -> list[list[ShardSlice]]:
    """The rows of ``shards`` (sorted by name here), in path order, cut into ranges of
    ``rows_per_range`` rows (an int, or a function of the total); at least one range,
    each a list of the non-empty slices of the shards, in shard order."""
    shards = sorted(shards, key=lambda shard: shard.path)
    paths = [shard_paths(shard) for shard in shards]
    total = sum(map(len, paths))
    size = rows_per_range(total) if callable(rows_per_range) else rows_per_range
    count = max(1, math.ceil(total / size))
    # Every row's shard, in path order. Arrow compares UTF-8 bytes, which is code point
    # order, as the shards are sorted; the sort is stable, so equal paths keep the
    # order of the shards (by name), as the single file's merge does.
    shard_of = np.repeat(np.arange(len(shards)), [len(array) for array in paths])
    if total:
        shard_of = shard_of[pc.sort_indices(pa.chunked_array(paths)).to_numpy()]
    cuts = np.zeros((count + 1, len(shards)), np.int64)
    for number in range(count):
        ranked = shard_of[number * size: (number + 1) * size]
        cuts[number + 1] = cuts[number] + np.bincount(ranked, minlength=len(shards))
    return [
        [ShardSlice.of(shard, int(cuts[number][index]), int(cuts[number + 1][index]))
         for index, shard in enumerate(shards)
         if cuts[number][index] < cuts[number + 1][index]]
        for number in range(count)
    ]
