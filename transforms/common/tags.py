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
# Reuse planning: (old shard, kept paths), and the names of counters of its choices.
REUSE_ROWS = "reuse_rows"
COUNTS = "counts"

# The manifest entry kind of an archive: (path, size, mtime, ARCHIVE_ENTRY, (units,)).
ARCHIVE_ENTRY = "archive"
