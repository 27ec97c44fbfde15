"""Output tags: the names of the tagged outputs steps hand each other, defined once.

A step that emits ``TaggedOutput(ERRORS, ...)`` and the step that reads ``[ERRORS]`` import
the same constant, so a renamed tag cannot silently empty a PCollection.
"""

# The main output of the reading steps (``with_outputs(..., main=ROWS)``).
ROWS = "rows"
# (DicomPath, ErrorType, Message, Exception) of a file that could not be read.
ERRORS = "errors"
# (DicomPath, Reason) of a file that is not DICOM or not a regular file.
SKIPPED = "skipped"
# (path, size, mtime, kind, details) of every outcome that is not a row, for the state.
MANIFEST = "manifest"
# (lean reader rows, fallbacks to pydicom) per batch.
READER_COUNTS = "reader_counts"
# (originals replaced in kept free text,) per batch of de-identified rows, when any.
CONTENT_COUNTS = "content_counts"
# ``ArchiveFound`` of an input recognised as a zip or tar.
ARCHIVES = "archives"
# ``ZipMemberRef`` of each zip member, reshuffled before extraction.
ZIP_MEMBERS = "zip_members"
# Members counted in each archive: matched files count an archive as its members.
ARCHIVE_UNITS = "archive_units"
# (column, kind) of every cell the bounded-cells step cut or summarised.
BOUNDED = "bounded"
# (escaped pattern, escaped folder) of a folder that one worker walks whole, so that a
# local walk spreads over the workers folder by folder.
FOLDERS = "folders"
# Reuse planning: (old shard, kept paths), and the names of counters of its choices.
REUSE_ROWS = "reuse_rows"
COUNTS = "counts"

# The manifest entry kind of an archive: (path, size, mtime, ARCHIVE_ENTRY, (units,)).
ARCHIVE_ENTRY = "archive"

# Keys of the dicts of PCollections the pipeline's composite steps hand each other
# (``beam_pipeline/pipeline.py``); each step reads the keys it needs.
MATCHED = "matched"  # FileMetadata of every matched file (discovery)
TO_EXTRACT = "to_extract"  # the matched files reuse planning left to extraction
REUSED_SHARDS = "reused_shards"  # ShardInfo of earlier rows kept for this run
REUSED_MANIFEST = "reused_manifest"  # earlier errors, skips and archive listings kept
REUSED_ARCHIVE_UNITS = "reused_archive_units"
REUSE_COUNTS = "reuse_counts"  # one dict: what reuse planning decided, for the summary
FILE_ROWS = "file_rows"  # bounded StoredRows of files (kept apart from members' rows:
MEMBER_ROWS = "member_rows"  # a Flatten would make the runner hold every row)
CELL_COUNTS = "cell_counts"  # one dict: the bounded cells' counts
CONTENT_TOTALS = "content_totals"  # one dict: free_text_replacements
READER_TOTALS = "reader_totals"  # one dict: rows by the lean reader, fallbacks
SHARDS = "shards"  # ShardInfo of every row shard of this run's generation
OUTCOME_PARTS = "outcome_parts"  # paths of this run's outcome parts
COLUMNS = "columns"  # one list: the table's columns
TABLE_FIGURES = "table_figures"  # one dict: the table writers' figures
SERIES_FIGURES = "series_figures"  # one dict: the series tables' figures for the report
SUMMARY = "summary"  # one dict: summary.json as written
HTML_REPORT = "html_report"  # the HTML report's path, once written
# DICOMweb sources (transforms/reading/dicomweb_rows.py): each series' (outcomes, failed
# series, instances of failed series as listed, previous rows gone), and the instances'
# bounded StoredRows.
SERIES_FIGURES = "series_figures"
WEB_ROWS = "web_rows"
# The key, in the DICOMweb READER_TOTALS, of the previous rows found gone only when their
# series was read (its instance search had failed); the summary adds it to files_dropped.
DROPPED_WHEN_READ = "files_dropped_when_read"
# DICOMweb reuse (transforms/output/web_reuse.py): the SeriesRef of every listed series,
# the previous output's DICOMweb outcomes as (series URL, Entry), the series left to read,
# and each reused series' instance count (the summary's matched count).
WEB_SERIES = "web_series"
WEB_ENTRIES = "web_entries"
WEB_TO_READ = "web_to_read"
WEB_REUSED_UNITS = "web_reused_units"
