"""DICOMweb series -> rows: one WADO-RS metadata request per series
(``.../studies/{study}/series/{series}/metadata``), and each instance's DICOM JSON
(PS3.18 Annex F) made into the row ``flatten`` gives a file (``dicomweb_json.py``: the
same ``FlattenSettings``, straight from the JSON where it can, else through
``pydicom.Dataset.from_json``), then the same content step; the pipeline bounds the
cells as for files. An instance's ``DicomPath`` is its
WADO-RS URL, ``{root}/studies/{study}/series/{series}/instances/{sop}``.

Values the server leaves out (``BulkDataURI``) are written ``<bulk data>``
(``transforms.common.rows.BULK_DATA_TEXT``): the JSON gives neither their bytes nor
their length, and fetching them would download them.

Outcomes: a ``StoredRow`` per instance, bounded like a file's (``cells.py``) (size and mtime unknown: ``None``); a series
whose metadata request still fails after the retries is one ``ERRORS`` record named by
the series URL, type ``Unreadable``, and the run goes on; an instance whose JSON does
not convert is an ``ERRORS`` record of its own (``Corrupt``). Every error is also
filed as a ``MANIFEST`` entry, and each series emits its ``SERIES_FIGURES`` so that
the summary counts instances (where known) and failed series and still adds up. A
series read again because its instance search failed (``--incremental``) also counts
its previous rows that the metadata no longer lists (``SeriesRef.previous``): the
summary adds them to ``files_dropped``.
"""

from __future__ import annotations

import concurrent.futures

import apache_beam as beam
from apache_beam.metrics import Metrics
from transforms.common.batches import BatchFiles
from transforms.common.collector import freeze_startup_objects
from transforms.common.tags import (
    BOUNDED, CELL_COUNTS, DROPPED_WHEN_READ, ERRORS, MANIFEST, MATCHED, READER_TOTALS, ROWS,
    SERIES_FIGURES, WEB_REUSED_UNITS, WEB_ROWS, WEB_TO_READ,
)
from transforms.inputs.dicomweb import (
    DicomWebSettings, SeriesRef, first_value, http_reason,
)
from transforms.reading.cells import BoundCells, CountBoundedCells
from transforms.reading.dicomweb_json import instance_row
from transforms.reading.extract import quiet_pydicom
from transforms.reading.file_outcomes import StoredRow
from transforms.reading.flatten import FlattenSettings

SOP_INSTANCE_UID = "00080018"
# Series fetched at once by one worker: requests wait on the server, not on our CPU.
CONCURRENT_SERIES = 8


class ReadSeries(beam.DoFn):
    """Batches of ``SeriesRef`` -> a ``StoredRow`` per instance, ``ERRORS`` and
    ``MANIFEST`` records of what failed, and each series' ``SERIES_FIGURES``."""

    def __init__(self, web: DicomWebSettings, settings: FlattenSettings, content=None,
                 progress=None):
        self.web = web
        self.settings = settings
        self.content = content  # transforms.content.settings.RowContent
        self.progress = progress
        self.clients: dict = {}
        self.pool = None
        self.extracted = Metrics.counter("dicom", "extracted")
        self.errors = Metrics.counter("dicom", "errors")

    def setup(self):
        quiet_pydicom()
        freeze_startup_objects()
        self.clients = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(CONCURRENT_SERIES)
        if self.progress is not None:
            self.progress.connect()

    def teardown(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False)

    def _client(self, root: str):
        if root not in self.clients:  # one per thread would do too; sessions are thread-safe for GET
            self.clients[root] = self.web.client(root)
        return self.clients[root]

    def _fetch(self, ref: SeriesRef):
        try:
            return self._client(ref.root).retrieve_series_metadata(ref.study, ref.series), None
        except Exception as exc:  # pylint: disable=broad-except
            return None, exc

    def process(self, refs):
        refs = refs if isinstance(refs, list) else [refs]
        if self.pool is None:  # used without setup()
            self.setup()
        for ref, (instances, failure) in zip(refs, self.pool.map(self._fetch, refs)):
            yield from self._outcomes(ref, instances, failure)

    def _outcomes(self, ref: SeriesRef, instances, failure):
        if failure is not None:
            self.errors.inc()
            self._done(1)
            record = (ref.url, "Unreadable", f"WADO-RS metadata of the series: "
                      f"{http_reason(failure)}", f"{type(failure).__name__}: {failure}")
            yield beam.pvalue.TaggedOutput(ERRORS, record)
            yield beam.pvalue.TaggedOutput(MANIFEST, (ref.url, None, None, "error", record[1:]))
            yield beam.pvalue.TaggedOutput(SERIES_FIGURES, (1, 1, max(ref.instances, 0), 0))
            instances = None
        else:
            yield from self._instances(ref, instances)

    def _instances(self, ref: SeriesRef, instances):
        listed = set()  # the instances' paths, rows and errors alike
        for index, instance in enumerate(instances or [], start=1):
            try:
                row = instance_row(instance, ref.url, index, self.settings)
                listed.add(row.path)
            except Exception as exc:  # pylint: disable=broad-except
                self.errors.inc()
                sop = first_value(instance, SOP_INSTANCE_UID) if isinstance(instance, dict) else None
                path = f"{ref.url}/instances/{sop or f'item-{index}'}"
                listed.add(path)
                record = (path, "Corrupt", "DICOM JSON that does not convert: "
                          f"{type(exc).__name__}: {exc}", f"{type(exc).__name__}: {exc}")
                yield beam.pvalue.TaggedOutput(ERRORS, record)
                yield beam.pvalue.TaggedOutput(MANIFEST, (path, None, None, "error", record[1:]))
                continue
            if self.content is not None:
                row = self.content.apply(row)
            self.extracted.inc()
            yield StoredRow(row.path, row.values, row.vrs, None, None)
        count = len(instances or [])
        if count == 0:  # a series listed but holding nothing: an error, not silence
            self.errors.inc()
            record = (ref.url, "Unreadable", "WADO-RS metadata of the series lists no "
                      "instance", "")
            yield beam.pvalue.TaggedOutput(ERRORS, record)
            yield beam.pvalue.TaggedOutput(MANIFEST, (ref.url, None, None, "error", record[1:]))
            count = 1
        self._done(count)
        # Previous rows now gone: only a series whose instance search failed carries them.
        gone = len(set(ref.previous) - listed)
        yield beam.pvalue.TaggedOutput(SERIES_FIGURES, (count, 0, 0, gone))

    def _done(self, count: int):
        if self.progress is not None:
            self.progress.matched(count)
            self.progress.done(count)

    def finish_bundle(self):
        if self.progress is not None:
            self.progress.flush()


def _sum_figures(figures) -> tuple:
    return tuple(map(sum, zip(*figures))) or (0, 0, 0, 0)


def _series_figures(total: tuple) -> dict:
    return {"dicomweb_series_failed": total[1],
            "dicomweb_instances_in_failed_series": total[2], DROPPED_WHEN_READ: total[3]}


def merge_dicts(dicts) -> dict:
    merged: dict = {}
    for part in dicts:
        merged.update(part)
    return merged


def add_cell_counts(counts) -> dict:
    """``cells_bounded*`` dicts (``cells.CountBounded``) of several row sources, summed."""
    total = {"cells_bounded": 0, "cells_bounded_values": 0, "cells_cut_text": 0}
    by_column: dict = {}
    for part in counts:
        for key in total:
            total[key] += part.get(key, 0)
        for column, count in part.get("cells_bounded_by_column", {}).items():
            by_column[column] = by_column.get(column, 0) + count
    return {**total, "cells_bounded_by_column": dict(sorted(by_column.items()))}


class ReadDicomWeb(beam.PTransform):
    """{WEB_TO_READ: the ``SeriesRef`` to read, ERRORS: the listing's errors,
    WEB_REUSED_UNITS: each reused series' instance count} -> {WEB_ROWS: bounded
    ``StoredRow``s, ERRORS, MANIFEST, MATCHED: one ``None`` per outcome, reused ones
    included (the summary's matched count), READER_TOTALS: the failed series' figures,
    CELL_COUNTS: the bounded cells' figures}. The listing (``ListDicomWeb``) and the
    choice of the series to read (``output.reuse.PlanReuse``) come before."""

    def __init__(self, web: DicomWebSettings, settings: FlattenSettings,
                 content=None, progress=None):
        super().__init__()
        self.web = web
        self.settings = settings
        self.content = content
        self.progress = progress

    def expand(self, listed):
        read = (
            listed[WEB_TO_READ]
            | "Batch" >> BatchFiles(CONCURRENT_SERIES)
            | "ReadSeries" >> beam.ParDo(ReadSeries(self.web, self.settings, self.content,
                                                     self.progress))
            .with_outputs(ERRORS, MANIFEST, SERIES_FIGURES, main=ROWS)
        )
        rows = read[ROWS] | "BoundCells" >> BoundCells(
            self.settings.max_values, self.settings.max_cell_chars)
        figures = read[SERIES_FIGURES]
        listing_manifest = listed[ERRORS] | "ListingManifest" >> beam.Map(
            lambda record: (record[0], None, None, "error", tuple(record[1:])))
        return {
            WEB_ROWS: rows[ROWS],
            ERRORS: (read[ERRORS], listed[ERRORS]) | "AllErrors" >> beam.Flatten(),
            MANIFEST: (read[MANIFEST], listing_manifest) | "AllManifest" >> beam.Flatten(),
            MATCHED: (
                figures | "Outcomes" >> beam.FlatMap(lambda figure: [None] * figure[0]),
                listed[ERRORS] | "ListingOutcomes" >> beam.Map(lambda _: None),
                listed[WEB_REUSED_UNITS] | "ReusedOutcomes" >> beam.FlatMap(
                    lambda units: [None] * units),
            ) | "AllOutcomes" >> beam.Flatten(),
            READER_TOTALS: figures
            | "Sum" >> beam.CombineGlobally(_sum_figures)
            | "AsDict" >> beam.Map(_series_figures),
            CELL_COUNTS: rows[BOUNDED] | "CellCounts" >> CountBoundedCells(),
        }


def with_dicomweb(records: dict, web: dict) -> dict:
    """The pipeline's records with the DICOMweb ones added: MATCHED, ERRORS and MANIFEST
    flattened, READER_TOTALS and CELL_COUNTS merged into one dict each, WEB_ROWS added
    (spilled by its own step: ``output.spill.StoreRows``)."""
    merged = dict(records)
    for key in (MATCHED, ERRORS, MANIFEST):
        merged[key] = (records[key], web[key]) | f"WithWeb_{key}" >> beam.Flatten()
    merged[READER_TOTALS] = (
        (records[READER_TOTALS], web[READER_TOTALS])
        | "WithWebReaderTotals" >> beam.Flatten()
        | "MergeReaderTotals" >> beam.CombineGlobally(merge_dicts)
    )
    merged[CELL_COUNTS] = (
        (records[CELL_COUNTS], web[CELL_COUNTS])
        | "WithWebCellCounts" >> beam.Flatten()
        | "AddCellCounts" >> beam.CombineGlobally(add_cell_counts)
    )
    merged[WEB_ROWS] = web[WEB_ROWS]
    return merged
