"""The extraction step: the files left to read -> their rows, errors and skips.

Files are read in batches (``common.batches``); each is recognised by content and read
by the lean reader or the pydicom path (``extract.py``); zip and tar inputs hand their
members on to ``archives.py``, which extracts them like files named ``ARCHIVE!/MEMBER``.
Every row's cells are bounded (``cells.py``) in the stage that read it. Rows of files and
rows of archive members stay two PCollections: the output stage spills each where it was
read, since a Flatten would make the runner hold every row between stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from transforms.common.batches import BatchFiles
from transforms.common.tags import (
    ARCHIVE_UNITS, ARCHIVES, BOUNDED, CELL_COUNTS, CONTENT_COUNTS, CONTENT_TOTALS, ERRORS,
    FILE_ROWS, MANIFEST, MEMBER_ROWS, READER_COUNTS, READER_TOTALS, ROWS, SKIPPED,
)
from transforms.content.settings import PseudonymizeReportPaths, SumContentCounts, TablePath
from transforms.inputs.limits import FileLimits
from transforms.reading.archives import ReadArchives
from transforms.reading.cells import BoundCells, CountBoundedCells
from transforms.reading.extract import ExtractHeaders, SumReaderCounts
from transforms.reading.file_outcomes import KeepFileMetadata
from transforms.reading.flatten import FlattenSettings


@dataclass(frozen=True)
class ReadingSettings:
    """How every file is read: the walker's settings, the per-file limits, the content
    policy's Row step (``content.settings.RowContent``) and whether archives are opened."""

    flatten: FlattenSettings
    limits: FileLimits
    content: object = None
    read_archives: bool = True


class ExtractRows(beam.PTransform):
    """FileMetadata -> {FILE_ROWS, MEMBER_ROWS: bounded ``StoredRow``s; ERRORS, SKIPPED:
    records; MANIFEST: outcome entries for the state; ARCHIVE_UNITS: each archive's
    count of outcomes; READER_TOTALS, CELL_COUNTS: one dict each, for the summary}."""

    def __init__(self, settings: ReadingSettings, progress=None):
        super().__init__()
        self.settings = settings
        self.progress = progress

    def expand(self, files):
        settings, flatten = self.settings, self.settings.flatten
        extracted = (
            files
            | "Batch" >> BatchFiles()
            | "Headers" >> beam.ParDo(KeepFileMetadata(ExtractHeaders(
                flatten, self.progress, limits=settings.limits, content=settings.content,
                read_archives=settings.read_archives,
            ))).with_outputs(ERRORS, SKIPPED, MANIFEST, READER_COUNTS, ARCHIVES, CONTENT_COUNTS,
                             main=ROWS)
        )
        members = extracted[ARCHIVES] | "Archives" >> ReadArchives(
            flatten, self.progress, limits=settings.limits, content=settings.content
        )
        file_rows = extracted[ROWS] | "BoundCells" >> BoundCells(
            flatten.max_values, flatten.max_cell_chars
        )
        member_rows = members[ROWS] | "BoundMemberCells" >> BoundCells(
            flatten.max_values, flatten.max_cell_chars
        )
        return {
            FILE_ROWS: file_rows[ROWS],
            MEMBER_ROWS: member_rows[ROWS],
            ERRORS: (extracted[ERRORS], members[ERRORS]) | "AllErrors" >> beam.Flatten(),
            SKIPPED: (extracted[SKIPPED], members[SKIPPED]) | "AllSkipped" >> beam.Flatten(),
            # With --pseudonymize-paths the state's outcome entries name no real path either.
            MANIFEST: (extracted[MANIFEST], members[MANIFEST]) | "AllOutcomes" >> beam.Flatten()
            | "OutcomePaths" >> PseudonymizeReportPaths(
                TablePath(settings.content.settings) if settings.content else None,
                manifest=True),
            ARCHIVE_UNITS: members[ARCHIVE_UNITS],
            READER_TOTALS: extracted[READER_COUNTS] | "ReaderCounts" >> SumReaderCounts(),
            # Originals replaced in kept free text (transforms/content/leaks.py).
            CONTENT_TOTALS: (extracted[CONTENT_COUNTS], members[CONTENT_COUNTS])
            | "AllContentCounts" >> beam.Flatten()
            | "ContentCounts" >> SumContentCounts(),
            CELL_COUNTS: (file_rows[BOUNDED], member_rows[BOUNDED])
            | "AllBounded" >> beam.Flatten()
            | "CellCounts" >> CountBoundedCells(),
        }
