"""CPU of the table merge on wide, sparse shards: 8 shards x 2,000 rows, 2,400 columns,
one row in 50 filling every column (as an RT Structure Set does), the rest 80 columns.

    python -m benchmarks.merge_width

Prints the merge's process CPU seconds (CSV and Parquet written in one pass).
"""
import os
import random
import tempfile
import time

from transforms.common.rows import Row
from transforms.output import shard_format
from transforms.output.tables import merge_shards, TableFiles
from transforms.output.columns import Column
random.seed(1)
d = tempfile.mkdtemp(prefix="merge-width-")
names = [f"Col {i:04d} (0010,{i:04X})" for i in range(2400)]
shards = []
allcols = {}
for s in range(8):
    rows = []
    for r in range(2000):
        vals = {"DicomPath": f"/a/{s}/{r:05d}"}
        cols = names[:80] if r % 50 else names  # one wide row in 50
        for n in cols: vals[n] = "x" * 8
        rows.append(Row(vals["DicomPath"], vals, {n: "LO" for n in vals}))
    info = shard_format.write_shard(os.path.join(d, f"rows-{s}.parquet"), rows)
    shards.append(info)
    for n, v in info.columns.items(): allcols[n] = allcols.get(n, frozenset()) | v
from transforms.reading.naming import order_columns
columns = [Column(n, allcols[n]) for n in order_columns(allcols)]
t = time.process_time()
merge_shards(shards, columns, TableFiles(os.path.join(d, "t.csv"), os.path.join(d, "t.parquet")), temp_dir=d)
print("merge cpu s", round(time.process_time() - t, 2))
