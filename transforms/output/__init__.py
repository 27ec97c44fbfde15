"""Output lifecycle: everything a run writes, from row shards to the committed tables.

(The full description of the lifecycle lands here with the rest of the package; the
shard format is ``shard_format.py``.)
"""
