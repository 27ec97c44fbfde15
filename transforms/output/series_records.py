"""Series and study records: a series' ``SeriesSummary`` as the row of ``scan.series.csv``,
and the study rows of ``scan.studies.csv`` made from those rows.

A series row's fixed figures (``SERIES_FIELDS``):

* ``Files`` (rows of the table in the series), ``Bytes`` (their files' sizes),
  ``CommonFolder`` (the longest folder every ``DicomPath`` of the series is in);
* ``InstanceNumberMin``/``Max``, ``MissingInstanceNumbers`` (numbers between min and
  max that no file has), ``DuplicateInstanceNumbers`` (files whose number another file
  of the series has too); empty when no file has one, or past ``series.RANGE_CAP``;
* geometry, from Image Position (Patient) along the normal of Image Orientation
  (Patient): ``SlicePositions`` (distinct positions), ``SliceSpacing`` (the median step,
  mm), ``SliceSpacingSpread`` (the largest deviation of a step, a gap's step divided by
  the slices it spans, from that spacing), ``SliceGaps`` (slices missing where a step
  spans several spacings), ``DuplicatePositions`` (files at a position another file
  has), ``EvenlySpaced`` (spread within ``max(0.01 mm, 1% of the spacing)``, no gap, no
  duplicate); ``GeometryNote`` says why they are empty (orientation varies, a file has
  no position, too many positions);
* ``AcquisitionSeconds``: latest minus earliest Acquisition Time;
* ``Defects``: what makes the series look incomplete, ``; ``-separated, in this order:
  missing instance numbers, duplicate instance numbers, slice gaps, duplicate
  positions, uneven spacing. ``Incomplete`` is true when there is any.

Then, for each column of the file table: its value when every file of the series has
the same one (``constant``), else (``varying``) the number of distinct values (a file
without the column counts as one more value; ``DISTINCT_CAP + 1`` means more than
``DISTINCT_CAP``) and, for single-valued numbers, dates and times (``series.bound_kind``),
the smallest and largest value.

``report_figures``: what the HTML report's series section shows, from these rows.
"""

from __future__ import annotations

import statistics

from transforms.common.rows import grouping_name
from transforms.output.series import (
    DISTINCT_CAP, IMAGE_ORIENTATION, KEY_COLUMNS, NO_POSITION, SeriesSummary,
)
from transforms.output.series_packing import unpack
from transforms.output.types import parse_tm
from transforms.reading.naming import public_name

ACQUISITION_TIME = public_name(0x00080032)
MODALITY = public_name(0x00080060)
STUDY_DATE = public_name(0x00080020)
STUDY_DESCRIPTION = public_name(0x00081030)
# Attributes a series should hold one value of: listed in the report when they vary.
SHOULD_BE_CONSTANT = (MODALITY, public_name(0x00280010), public_name(0x00280011),
                      IMAGE_ORIENTATION, public_name(0x00280030))
SPACING_TOLERANCE_MM = 0.01
SPACING_TOLERANCE = 0.01  # of the spacing
DEFECTS = ("missing instance numbers", "duplicate instance numbers", "slice gaps",
           "duplicate positions", "uneven spacing")

SERIES_FIELDS = (
    "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Files", "Bytes", "CommonFolder",
    "InstanceNumberMin", "InstanceNumberMax", "MissingInstanceNumbers",
    "DuplicateInstanceNumbers", "SlicePositions", "SliceSpacing", "SliceSpacingSpread",
    "SliceGaps", "DuplicatePositions", "EvenlySpaced", "GeometryNote", "AcquisitionSeconds",
    "Incomplete", "Defects",
)
STUDY_FIELDS = (
    "PatientID", "StudyInstanceUID", "StudyDate", "StudyDescription", "Modalities", "Series",
    "Files", "Bytes", "IncompleteSeries", "IncompleteSeriesInstanceUIDs",
)


def common_folder(first: str | None, last: str | None) -> str:
    """The folder every path between ``first`` and ``last`` (in sort order) is in."""
    if first is None:
        return ""
    length = 0
    for a, b in zip(first, last):
        if a != b:
            break
        length += 1
    prefix = first[:length]
    return prefix[: prefix.rfind("/") + 1] if first != last else first[: first.rfind("/") + 1]


def _geometry_figures(summary: SeriesSummary) -> tuple[dict, bool]:
    """The geometry fields, and whether the spacing is uneven."""
    figures = dict.fromkeys(("SlicePositions", "SliceSpacing", "SliceSpacingSpread",
                             "SliceGaps", "DuplicatePositions", "EvenlySpaced"))
    geometry = summary.geometry
    if geometry is None:
        figures["GeometryNote"] = ""
        return figures, False
    note = geometry.note
    if not note and sum(geometry.positions.values()) != summary.files:
        note = NO_POSITION
    figures["GeometryNote"] = note
    if note:
        return figures, False
    positions = sorted(geometry.positions)
    figures["SlicePositions"] = len(positions)
    figures["DuplicatePositions"] = summary.files - len(positions)
    if len(positions) < 2:
        figures["SliceGaps"] = 0
        return figures, False
    steps = [b - a for a, b in zip(positions, positions[1:])]
    spacing = statistics.median(steps)
    spans = [max(1, round(step / spacing)) for step in steps]
    spread = max(abs(step / span - spacing) for step, span in zip(steps, spans))
    gaps = sum(span - 1 for span in spans)
    uneven = spread > max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE * spacing)
    figures.update({
        "SliceSpacing": round(spacing, 4),
        "SliceSpacingSpread": round(spread, 4),
        "SliceGaps": gaps,
        "EvenlySpaced": not uneven and gaps == 0 and figures["DuplicatePositions"] == 0,
    })
    return figures, uneven


def _seconds(column) -> float | None:
    if column is None:
        return None
    low, high = column.bounds()
    if low is None:
        return None
    try:
        low, high = parse_tm(low), parse_tm(high)
    except ValueError:
        return None

    def seconds(time):
        return time.hour * 3600 + time.minute * 60 + time.second + time.microsecond / 1e6

    return round(seconds(high) - seconds(low), 6)


def column_cells(summary: SeriesSummary, names: dict | None = None,
                 numbers: dict | None = None) -> tuple[dict, dict]:
    """``({column: value}, {column: (None, distinct count, low, high)})``: the columns
    with one value in every file of the series, and the others (low and high as the
    DICOM text of the smallest and largest value). ``names``: ``{number: name}`` of
    columns the summary numbers (``series.column_numbers``), to name them by; without
    it, ``numbers`` (``{name: number}``) says how the cells are keyed."""
    files, counts, constant = summary.files, summary.counts, summary.constant
    get = (names or {}).get
    # Most cells: a value every file of the series has. No count exceeds the files, so
    # when they add up every column is in every file: the cells are renamed in C loops.
    in_every_file = sum(counts.values()) == files * len(counts)
    if in_every_file:
        same = dict(zip(map(get, constant, constant), constant.values()))
    else:
        same = {get(name, name): value for name, value in constant.items()
                if counts[name] == files}
    varying = {}
    # Every column of a summary is in ``constant`` or in ``varying`` (series.py).
    partly = () if in_every_file else [name for name in constant if counts[name] != files]
    for name in [*summary.varying, *partly]:
        count, column = counts[name], summary.column(name)
        distinct = DISTINCT_CAP + 1 if column.values is None else \
            len(column.values) + (count < files)
        low, high = column.bounds()
        if isinstance(low, tuple):  # numbers: (value, text)
            low, high = low[1], high[1]
        varying[get(name, name)] = (None, distinct, low, high)
    # The keys are not columns here, nor the keys read only for grouping (the only
    # cells a tag selection keeps under grouping names: content/settings.py).
    key_of = (lambda name: name) if names or not numbers else \
        (lambda name: numbers.get(name, name))
    for name in (*KEY_COLUMNS, *map(grouping_name, KEY_COLUMNS)):
        same.pop(key_of(name), None)
        varying.pop(key_of(name), None)
    return same, varying


def set_cells(record: dict, constant: dict, varying: dict) -> None:
    """A series row's file-table cells (``column_cells``): ``constant`` (value) and
    ``varying`` (``(None, distinct count, low, high)``); ``cell`` reads either."""
    record["constant"], record["varying"] = constant, varying


def cell(record: dict, column: str) -> tuple | None:
    """A column of a series row as ``(value or None, distinct count, low, high)``; None
    when no file of the series has it."""
    value = record["constant"].get(column)
    return (value, None, None, None) if value is not None else record["varying"].get(column)


def series_record(keyed, numbers: dict | None = None, names: dict | None = None) -> dict:
    """``(key, SeriesSummary or its pack)`` -> the series row: ``SERIES_FIELDS`` and
    ``columns``. ``numbers`` (``series.column_numbers``) and ``names`` (its inverse):
    for a summary whose columns are numbered; the row names them (without ``names``,
    its cells stay keyed by number, as ``series_rows.py`` stashes them)."""
    (patient, study, series), summary = keyed
    summary = unpack(summary)
    missing, duplicates = summary.instances.missing_and_duplicates()
    geometry, uneven = _geometry_figures(summary)
    record = {
        "PatientID": patient, "StudyInstanceUID": study, "SeriesInstanceUID": series,
        "Files": summary.files, "Bytes": summary.bytes,
        "CommonFolder": common_folder(summary.first_path, summary.last_path),
        "InstanceNumberMin": summary.instances.low, "InstanceNumberMax": summary.instances.high,
        "MissingInstanceNumbers": missing, "DuplicateInstanceNumbers": duplicates,
        **geometry,
        "AcquisitionSeconds": _seconds(summary.column(
            (numbers or {}).get(ACQUISITION_TIME, ACQUISITION_TIME))),
    }
    found = (missing, duplicates, record["SliceGaps"], record["DuplicatePositions"], uneven)
    defects = [name for name, value in zip(DEFECTS, found) if value]
    record["Incomplete"] = bool(defects)
    record["Defects"] = "; ".join(defects)
    set_cells(record, *column_cells(summary, names, numbers))
    return record


def constant(record: dict, column: str) -> str | None:
    return record["constant"].get(column)


def varying_attributes(record: dict) -> list[str]:
    """The should-be-constant columns whose value varies in the series."""
    return [name for name in SHOULD_BE_CONSTANT if name in record["varying"]]


def _study_figures(records) -> dict:
    """The figures of one study's series rows: sums and sets, whatever their order."""
    figures = {"series": 0, "files": 0, "bytes": 0, "dates": set(), "descriptions": set(),
               "modalities": set(), "incomplete": set()}
    for record in records:
        figures["series"] += 1
        figures["files"] += record["Files"]
        figures["bytes"] += record["Bytes"]
        for field, column in (("dates", STUDY_DATE), ("descriptions", STUDY_DESCRIPTION),
                              ("modalities", MODALITY)):
            value = constant(record, column)
            if value is not None:
                figures[field].add(value)
        if record["Incomplete"]:
            figures["incomplete"].add(record["SeriesInstanceUID"])
    return figures


def study_record(keyed) -> dict:
    (patient, study), figures = keyed
    return {
        "PatientID": patient, "StudyInstanceUID": study,
        "StudyDate": "\\".join(sorted(figures["dates"])),
        "StudyDescription": "\\".join(sorted(figures["descriptions"])),
        "Modalities": "\\".join(sorted(figures["modalities"])),
        "Series": figures["series"], "Files": figures["files"], "Bytes": figures["bytes"],
        "IncompleteSeries": len(figures["incomplete"]),
        "IncompleteSeriesInstanceUIDs": "\\".join(sorted(figures["incomplete"])),
    }


def study_records(series: list) -> list:
    """The study rows of all series rows, one per (PatientID, StudyInstanceUID).

    Made where the series rows are written, from them: a study row is a few sums and
    sets over its series, and the series rows are all there."""
    by_study: dict = {}
    for record in series:
        by_study.setdefault((record["PatientID"], record["StudyInstanceUID"]), []).append(record)
    return [study_record((key, _study_figures(records))) for key, records in by_study.items()]


REPORT_SAMPLE = 100  # incomplete / varying series listed in the report


def report_figures(series: list, studies: list) -> dict:
    """What the HTML report's series section shows (``transforms/report/series_section.py``)."""
    by_modality: dict = {}
    incomplete, varying = [], []
    for record in series:
        modality = constant(record, MODALITY) or "(varies or none)"
        by_modality[modality] = by_modality.get(modality, 0) + 1
        if record["Incomplete"]:
            incomplete.append(record)
        attributes = varying_attributes(record)
        if attributes:
            varying.append((record, [name.rsplit(" (", 1)[0] for name in attributes]))

    def brief(record):
        return {"series": record["SeriesInstanceUID"], "folder": record["CommonFolder"],
                "files": record["Files"], "defects": record["Defects"],
                "modality": constant(record, MODALITY) or ""}

    return {
        "series": len(series), "studies": len(studies),
        "by_modality": sorted(by_modality.items(), key=lambda item: (-item[1], item[0])),
        "incomplete_count": len(incomplete),
        "incomplete": [brief(record) for record in incomplete[:REPORT_SAMPLE]],
        "varying_count": len(varying),
        "varying": [dict(brief(record), attributes=attributes)
                    for record, attributes in varying[:REPORT_SAMPLE]],
    }
