"""Output lifecycle: everything a run writes, from row shards to the committed tables.

May import ``common``, ``inputs``, ``content`` and ``reading``.

For ``-o scan.csv`` (``scan.parquet`` and the reports are named alike)::

    scan.lock                       held by the one run writing this output
                                    (beam_pipeline/lock.py)
    .scan.tmp-<run>/                this run's temp files: the CSV's and JSON lines'
                                    parts and the files joined from them, the
                                    Parquet table, the nested file's converted
                                    shards, each before its rename
    scan.state/CURRENT              JSON: the generation the outputs were built from
    scan.state/gen-<run>/           this run's rows and outcomes, kept for the next run
        settings.json               fingerprint: settings, code hash, pydicom version
        rows-<uuid>.parquet         row shards                      (shard_format.py)
        outcomes-<uuid>.parquet     errors and skips
        GENERATION.json             at commit: the shards and parts that reached it

A run, step by step (``beam_pipeline/pipeline.py`` shows the same in order):

1. Lock (launcher, before any work): create ``scan.lock`` if absent, atomically; a held
   lock means exit 2 naming the holder (or wait), a stale one is taken over.
2. Plan (``state.py``, ``reuse.py``): read ``CURRENT`` and earlier generations; with
   ``--incremental`` reuse rows of unchanged files and DICOMweb series
   (``web_reuse.py``), always resume what an interrupted run completed. Anything untrusted: a note and a full re-extraction.
3. Spill (``spill.py``): rows -> sorted Parquet shards in this generation, errors/skips
   -> outcome parts. Names are unique per attempt; only ``ShardInfo`` records flow on.
4. Tables (``write_tables.py``): the shards whose records reached it are merged by path
   (``shard_merge.py``, memory bounded) and laid out (``tables.py``) under
   attempt-unique temp names; then finalize renames them into place ("already renamed"
   counts as done). The CSV and ``scan.jsonl`` (from the rows' DICOM JSON cells,
   ``documents.py``) are written in parts, one range of the path order per worker
   (``path_ranges.py``), and joined (``table_parts.py``); the flat Parquet by one merge.
   Columns are named by ``--column-names`` (``keyword_names.py``). ``scan.nested.parquet``
   (``nested_file.py``, ``nested.py``, ``nested_rows.py``): each shard's schema union
   and rows made by its worker, then one step merges them by path into the file, under
   an attempt-unique name, renamed with the tables. With an
   output folder (``-o scan/``) the nested table is instead a dataset of parts,
   ``scan/part-00000-of-00012.parquet``..., written in parallel and renamed into place
   the same way (``nested_parts.py``; the other outputs go beside the folder).
   Series tables (``series*.py``): the same shards read again, one partial summary per
   series, combined per series, each series' row stashed in a file of the temp dir
   under a name no other attempt uses (``series_rows.py``); the study rows made from
   them; ``scan.series.csv`` / ``scan.studies.csv`` (and Parquet) written under
   attempt-unique names and renamed like the tables.
5. Report (``transforms/report/summary.py``): errors, skipped, summary, each written whole.
6. Commit (``state.py``): ``GENERATION.json`` lists the shards and parts that reached
   the commit, then ``CURRENT`` names this generation. A kill before this point leaves
   the previous outputs' state as it was.
7. Cleanup (``cleanup.py``), last: this run's temp dir, every other generation, killed
   runs' temp dirs, files of discarded attempts; missing files are fine.
8. Unlock (launcher), whatever happened.

Retry rules (Beam's ``WriteImpl`` / ``FileBasedSink``): a bundle that runs twice writes
two files and one of them is listed; no step reads a directory listing of rows it did not
get as records (except resuming a never-committed generation, where each file takes one
row whatever the duplicates); no step deletes anything before the commit; every step
after the merge is an idempotent replacement. Everything on disk is Parquet or JSON with
a format version; nothing is pickled.
"""
