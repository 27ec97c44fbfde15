"""Series and study tables (``scan.series.csv``, ``scan.studies.csv``), on real files:
pydicom's bundled series, and an archive from ``benchmarks/make_archive.py`` in which
the test removes instances, duplicates one and moves one slice. Exactly those defects
must be reported, nothing else; every bundle runs twice."""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest

from benchmarks.make_archive import generate
from tests.conftest import TEST_FILES, read_csv, run_cli
from transforms.output import shard_format
from transforms.output.columns import Column
from transforms.output.series import (
    DISTINCT_CAP, IMAGE_ORIENTATION, IMAGE_POSITION, INSTANCE_NUMBER, PATIENT_ID,
    POSITION_CAP, SERIES_UID, STUDY_UID, SeriesSummary, column_numbers,
)
from transforms.output.series_packing import (
    PLAIN_DATA, CombineSeries, decompress, pack, unpack,
)
from transforms.output.series_records import SERIES_FIELDS, cell, series_record, set_cells
from transforms.output.series_rows import SeriesRows, StashSeriesRows, read_stashed
from transforms.output.series_shards import _normal, _positions, shard_summaries
from transforms.output.series_tables import (
    dense_csv, keyword_name, series_layout, sparse_csv_parts, write_table,
)

REPEAT = "--direct_runner_bundle_repeat=1"
ALL_DEFECTS = ("missing instance numbers; duplicate instance numbers; slice gaps; "
               "duplicate positions; uneven spacing")
CT2 = "1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.2"  # 77654033/CT2: numbers 18, 180-182


def series_rows(out) -> list[dict]:
    return read_csv(out / "scan.series.csv")[1]


@pytest.fixture(scope="module")
def pydicom_series(tmp_path_factory):
    """pydicom's DICOMDIR test series: three patients, CR, CT and MR series."""
    root = tmp_path_factory.mktemp("pydicom-series")
    for patient in ("77654033", "98892001", "98892003"):
        shutil.copytree(os.path.join(TEST_FILES, "dicomdirtests", patient), root / patient)
    out = tmp_path_factory.mktemp("pydicom-series-out")
    assert run_cli(root, "-o", out / "scan.csv", "--format", "csv,parquet", "--quiet",
                   REPEAT) == 0
    return out


def test_pydicom_series_one_row_each_and_only_the_real_gap(pydicom_series):
    out = pydicom_series
    rows = series_rows(out)
    summary = json.loads((out / "scan.summary.json").read_text())
    assert len(rows) == 13
    assert sum(int(row["Files"]) for row in rows) == summary["rows"] == 31
    by_uid = {row["SeriesInstanceUID"]: row for row in rows}
    assert {uid: row["Defects"] for uid, row in by_uid.items() if row["Defects"]} == {
        CT2: "missing instance numbers; slice gaps"}
    ct2 = by_uid[CT2]
    # Instance numbers 18, 180, 181, 182 at z = -99.48, 103.02, 104.27, 105.52 mm.
    assert (ct2["InstanceNumberMin"], ct2["InstanceNumberMax"], ct2["MissingInstanceNumbers"],
            ct2["DuplicateInstanceNumbers"]) == ("18", "182", "161", "0")
    assert (ct2["SlicePositions"], ct2["SliceSpacing"], ct2["SliceGaps"],
            ct2["EvenlySpaced"], ct2["Incomplete"]) == ("4", "1.25", "161", "false", "true")
    assert ct2["CommonFolder"].endswith("/77654033/CT2/")
    # Localizers and radial MR: one orientation per file, no geometry, not a defect.
    assert sorted(row["CommonFolder"].split("/")[-2] for row in rows
                  if row["GeometryNote"] == "orientation varies") == [
        "CT2N", "MR2", "MR2", "MR700"]
    ct5n = next(row for row in rows if row["CommonFolder"].endswith("/CT5N/"))
    assert (ct5n["SliceSpacing"], ct5n["SliceSpacingSpread"], ct5n["EvenlySpaced"],
            ct5n["InstanceNumberMin"], ct5n["InstanceNumberMax"]) == ("2.5", "0.0", "true",
                                                                     "6", "10")
    # Constant columns show their value; varying ones a count and their range.
    assert ct5n["Modality"] == "CT"
    assert ct5n["ImageOrientationPatient"].startswith("1.000000\\0.000000\\")
    assert (ct5n["InstanceNumber"], ct5n["InstanceNumber_Distinct"],
            ct5n["InstanceNumber_Min"], ct5n["InstanceNumber_Max"]) == ("", "5", "6", "10")
    studies = read_csv(out / "scan.studies.csv")[1]
    assert sum(int(study["Series"]) for study in studies) == 13
    assert [study["IncompleteSeriesInstanceUIDs"] for study in studies
            if study["IncompleteSeries"] != "0"] == [CT2]


def test_pydicom_series_parquet_is_typed_and_sql_readable(pydicom_series):
    out = pydicom_series
    table = pq.read_table(out / "scan.series.parquet")
    assert str(table.schema.field("Files").type) == "int64"
    assert str(table.schema.field("EvenlySpaced").type) == "bool"
    assert str(table.schema.field("InstanceNumber_Min").type) == "int64"
    names, rows = read_csv(out / "scan.series.csv")
    assert table.column_names == names
    assert table.column("SeriesInstanceUID").to_pylist() == [r["SeriesInstanceUID"] for r in rows]
    # Keyword names need no quoting in SQL.
    found = duckdb.sql(
        "SELECT SeriesInstanceUID, MissingInstanceNumbers, Modality "
        f"FROM '{out / 'scan.series.parquet'}' WHERE Incomplete").fetchall()
    assert found == [(CT2, 161, "CT")]
    studies = duckdb.sql(f"SELECT sum(Files) FROM '{out / 'scan.studies.parquet'}'").fetchall()
    assert studies == [(31,)]


def test_pydicom_series_report_section(pydicom_series):
    page = (pydicom_series / "scan.report.html").read_text()
    assert 'data-figure="series_rows" data-value="13"' in page
    assert 'data-figure="incomplete_series" data-value="1"' in page
    section = page[page.index('id="incomplete-series"'):]
    assert "/77654033/CT2/" in section[:section.index("</table>")]
    # Orientation varies in the localizers and the radial MR.
    assert 'data-figure="varying_series" data-value="4"' in page


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A generated archive; in one CT/MR series: instances 5 and 6 removed, 10
    duplicated, slice 15 moved 0.4 mm along the normal."""
    root = tmp_path_factory.mktemp("generated")
    generate(str(root), 260, small=True, seed=7)
    folders = sorted({os.path.dirname(os.path.join(d, n))
                      for d, _, names in os.walk(root) for n in names})
    target = next(folder for folder in folders
                  if folder.endswith(("_CT", "_MR")) and len(os.listdir(folder)) >= 20)
    by_number = {}
    for name in os.listdir(target):
        ds = pydicom.dcmread(os.path.join(target, name), stop_before_pixels=True)
        by_number[int(ds.InstanceNumber)] = os.path.join(target, name)
    os.remove(by_number[5])
    os.remove(by_number[6])
    shutil.copyfile(by_number[10], os.path.join(target, "copy-of-10.dcm"))
    ds = pydicom.dcmread(by_number[15])
    x, y, z = (float(value) for value in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, round(z + 0.4, 2)]
    ds.save_as(by_number[15])
    series_uid = ds.SeriesInstanceUID
    out = tmp_path_factory.mktemp("generated-out")
    assert run_cli(root, "-o", out / "scan.csv", "--quiet", REPEAT) == 0
    return out, series_uid, len(by_number)


def test_generated_archive_exactly_the_damage_is_reported(damaged):
    out, series_uid, instances = damaged
    rows = series_rows(out)
    summary = json.loads((out / "scan.summary.json").read_text())
    assert sum(int(row["Files"]) for row in rows) == summary["rows"] == 259
    assert {row["SeriesInstanceUID"]: row["Defects"] for row in rows if row["Defects"]} == {
        series_uid: ALL_DEFECTS}
    row = next(row for row in rows if row["SeriesInstanceUID"] == series_uid)
    assert (row["Files"], row["InstanceNumberMin"], row["InstanceNumberMax"],
            row["MissingInstanceNumbers"], row["DuplicateInstanceNumbers"]) == (
        str(instances - 1), "1", str(instances), "2", "1")
    assert (row["SlicePositions"], row["SliceSpacing"], row["SliceSpacingSpread"],
            row["SliceGaps"], row["DuplicatePositions"], row["EvenlySpaced"]) == (
        str(instances - 2), "1.25", "0.4", "2", "1", "false")
    # Every other image series is complete and evenly spaced.
    images = [r for r in rows if r["SliceSpacing"] and r["SeriesInstanceUID"] != series_uid]
    assert images and all(r["EvenlySpaced"] == "true" and r["SliceSpacing"] == "1.25"
                          for r in images)
    studies = read_csv(out / "scan.studies.csv")[1]
    assert [s["IncompleteSeriesInstanceUIDs"] for s in studies if s["IncompleteSeries"] != "0"] \
        == [series_uid]
    assert sum(int(s["Files"]) for s in studies) == 259


def test_deidentified_series_tables_hold_the_tables_pseudonyms(tmp_path):
    root = tmp_path / "archive"
    shutil.copytree(os.path.join(TEST_FILES, "dicomdirtests", "98892001"), root / "98892001")
    out = tmp_path / "out"
    out.mkdir()
    assert run_cli(root, "-o", out / "scan.csv", "--deidentify", "--quiet") == 0
    table = read_csv(out / "scan.csv")[1]
    rows = series_rows(out)
    assert {row["SeriesInstanceUID"] for row in rows} == {
        row["Series Instance UID (0020,000E)"] for row in table}
    assert {row["PatientID"] for row in rows} == {row["Patient ID (0010,0020)"] for row in table}
    assert "98890234" not in (out / "scan.series.csv").read_text()


# ---------------------------------------------------------------------------
# The combine itself, on real shards: bounded per series, the same whatever the split.


def _rows(count: int, first: int = 1):
    rows = []
    for number in range(first, first + count):
        values = {PATIENT_ID: "P1", STUDY_UID: "1.2.3", SERIES_UID: "1.2.3.4",
                  INSTANCE_NUMBER: str(number), IMAGE_ORIENTATION: "1\\0\\0\\0\\1\\0",
                  IMAGE_POSITION: f"0\\0\\{number * 0.5}",
                  "SOP Instance UID (0008,0018)": f"1.2.3.4.{number}"}
        vrs = {name: "CS" for name in values}
        vrs.update({INSTANCE_NUMBER: "IS", IMAGE_POSITION: "DS", IMAGE_ORIENTATION: "DS"})
        rows.append(shard_format.ShardRow(f"/a/b/{number:06d}.dcm", values, vrs, 100, 0.0))
    return rows


def _summary(tmp_path, groups) -> dict:
    combine = CombineSeries()
    partials = []
    for number, rows in enumerate(groups):
        path = str(tmp_path / f"rows-{number}.parquet")
        shard_format.write_shard(path, rows)
        partials += list(shard_summaries(path).items())
    accumulators = []
    for key, summary in partials:
        accumulators.append(combine.add_input(combine.create_accumulator(), summary))
    return series_record((key, combine.merge_accumulators(accumulators)))


def test_a_series_of_100000_files_is_held_in_bounded_memory(tmp_path):
    record = _summary(tmp_path, [_rows(100_000)])
    assert (record["Files"], record["MissingInstanceNumbers"], record["InstanceNumberMax"]) \
        == (100_000, 0, 100_000)
    assert record["GeometryNote"] == f"more than {POSITION_CAP} slice positions"
    assert cell(record, "SOP Instance UID (0008,0018)")[1] == DISTINCT_CAP + 1
    # Past the cap, a number's bounds are still exact.
    assert cell(record, INSTANCE_NUMBER) == (None, DISTINCT_CAP + 1, "1", "100000")
    assert record["Bytes"] == 100 * 100_000 and record["CommonFolder"] == "/a/b/"


def test_the_summary_does_not_depend_on_how_rows_are_split(tmp_path):
    rows = _rows(1200)  # more distinct values than DISTINCT_CAP: folded in some splits
    del rows[40:43]  # numbers 41-43 missing
    rows.append(rows[7])  # number 8 twice
    expected = _summary(tmp_path / "whole", [rows])
    assert (expected["MissingInstanceNumbers"], expected["DuplicateInstanceNumbers"],
            expected["SliceGaps"], expected["DuplicatePositions"]) == (3, 1, 3, 1)
    for seed in range(3):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        cuts = sorted(random.Random(seed).sample(range(1, len(rows)), 7))
        groups = [shuffled[a:b] for a, b in zip([0] + cuts, cuts + [len(rows)])]
        (tmp_path / str(seed)).mkdir()
        assert _summary(tmp_path / str(seed), groups) == expected


def test_packed_partials_give_the_same_series(tmp_path):
    """Partials travel packed, their columns numbered by the table's columns (a column
    the table lacks keeps its name): merged and named again, the same series row."""
    rows = _rows(1500)  # past DISTINCT_CAP once merged: bounds from numbered columns
    del rows[100:104]
    expected = _summary(tmp_path / "plain", [rows[:700], rows[700:]])
    names_of = sorted({name for row in rows for name in row.values} - {STUDY_UID})
    columns = [Column(name, frozenset({"CS"})) for name in names_of]
    numbers = column_numbers(columns)
    combine = CombineSeries()
    (tmp_path / "packed").mkdir()
    accumulators = []
    for number, part in enumerate((rows[:500], rows[500:1000], rows[1000:])):
        path = str(tmp_path / "packed" / f"rows-{number}.parquet")
        shard_format.write_shard(path, part)
        for key, summary in shard_summaries(path, numbers=numbers).items():
            accumulators.append(combine.add_input(combine.create_accumulator(), pack(summary)))
    merged = combine.extract_output(combine.merge_accumulators(accumulators))
    assert isinstance(merged, bytes)  # packed: one value the runner moves as it is
    assert isinstance(PLAIN_DATA.decode(decompress(merged)), list)  # of plain data
    names = {number: name for name, number in numbers.items()}
    assert series_record((key, merged), numbers, names) == expected
    # Then made into its row where it is combined, stashed in a file of the temp dir
    # for the writer, and read back: the same row, whatever file it went to.
    other = SeriesSummary()
    other.files, other.counts = 2, {numbers[names_of[0]]: 2, numbers[names_of[1]]: 1}
    other.constant = {numbers[names_of[0]]: "é", numbers[names_of[1]]: "x"}
    odd = unpack(pack(other))  # a text Arrow cannot hold (no shard has one: robustness)
    odd.constant[numbers[names_of[0]]] = "bad \ud800"
    pairs = [(key, merged), (("P3", "S", "X"), pack(other)), (("P4", "S", "X"), odd)]
    rows = {pair[0]: series_record(pair, numbers, names) for pair in pairs}
    small = StashSeriesRows(str(tmp_path), budget=len(merged) + 1)
    small.setup()
    small.start_bundle()
    written = [path for pair in pairs for path in small.process(pair, columns)]
    assert len(written) == 1  # a bundle's rows go to a new file once their packed
    written += [windowed.value for windowed in small.finish_bundle()]  # bytes reach it
    stashed = [read_stashed([path]) for path in written]
    assert [len(found.records) for found in stashed] == [2, 1]
    found = read_stashed(written)
    assert isinstance(found.texts, list)  # a lone surrogate: the CSV fallback writes it
    assert sorted(found.named_records(names), key=repr) == sorted(rows.values(), key=repr)
    ordered = found.sorted_by(lambda record: record["PatientID"])
    assert ordered.named_records(names) == [rows[pair[0]] for pair in sorted(pairs)]
    foreign = tmp_path / "foreign.arrow"
    with pa.ipc.new_file(str(foreign), pa.schema([("Summary", pa.binary())])) as writer:
        writer.write_table(pa.table({"Summary": [merged]}))
    with pytest.raises(ValueError, match="not a file of stashed series rows"):
        read_stashed([str(foreign)])


def test_packing_refuses_what_is_not_plain_data():
    """No pickle: a summary holding anything but lists, numbers and strings is refused
    where it is packed, not pickled by the coder's fallback."""
    summary = SeriesSummary()
    summary.files, summary.constant = 1, {"Modality (0008,0060)": object()}
    with pytest.raises(TypeError, match="not plain data"):
        pack(summary)
    # The combine's accumulators travel as the same bytes.
    coder = CombineSeries().get_accumulator_coder()
    summary.constant = {"Modality (0008,0060)": "CT"}
    assert coder.decode(coder.encode(summary)) == pack(summary)


def test_the_sparse_csv_is_what_python_csv_writes():
    """The series writer lays out only the cells that have a value: the same bytes as
    ``csv`` over every cell, quotes, formula guard, numbers and booleans included."""
    texts = ["plain", 'say "hi"', "a,b", "two\nlines", "cr\r", "=1+1", "-3", "@x", "\tt",
             "", "é ü", "+"]
    columns = [Column(f"Text {number} (0009,10{number:02d})", frozenset({"LO"}))
               for number in range(4)] + [Column("Slice Thickness (0018,0050)",
                                                 frozenset({"DS"}))]
    columns[1] = Column("Acquisition Date (0008,0022)", frozenset({"DA"}))  # has min/max
    records = []
    for number, text in enumerate(texts):
        record = dict.fromkeys(SERIES_FIELDS)
        record.update({"PatientID": texts[-1 - number], "StudyInstanceUID": text,
                       "SeriesInstanceUID": "", "Files": number, "Bytes": 10 ** number,
                       "SliceSpacing": number / 3, "EvenlySpaced": number % 2 == 0,
                       "Incomplete": False, "Defects": text})
        constant = {columns[0].name: text, "not in the table (0009,1099)": "x"}
        varying = {columns[1].name: (None, number + 2, text or None, texts[number - 1])}
        if number % 3:
            varying[columns[4].name] = (None, 3, "-1.5", "2")
        else:
            constant[columns[4].name] = "0.5"
        if number % 4 == 1:
            constant[columns[2].name] = text
        set_cells(record, constant, varying)
        records.append(record)
    # The rows as the writer gets them: their cells numbered, as Arrow columns.
    numbers = column_numbers(columns)
    series = SeriesRows.from_records(records, numbers)
    layout = series_layout(series, columns)
    for guard in (False, True):
        expected = dense_csv(records, layout, guard)
        assert b"".join(sparse_csv_parts(series, layout, guard)) == expected
        # In parts of one row, or of a few: the rows do not depend on the parts.
        for chunk_bytes in (1, 60):
            parts = list(sparse_csv_parts(series, layout, guard, chunk_bytes))
            assert len(parts) > 3 and b"".join(parts) == expected
    assert b"".join(sparse_csv_parts(SeriesRows.from_records([], numbers), layout)) == \
        dense_csv(records[:0], layout)
    # Named again (the Parquet writer's input), every cell of the table comes back.
    for record in records:
        del record["constant"]["not in the table (0009,1099)"]
    assert series.named_records(layout.column_names) == records


def test_a_text_arrow_cannot_hold_is_written_by_python_csv(tmp_path):
    """A lone surrogate fails the Arrow parts before any is written: the table is
    written whole by ``csv`` instead, as it escapes it."""
    column = Column("Text (0009,1000)", frozenset({"LO"}))
    record = dict.fromkeys(SERIES_FIELDS)
    record.update({"PatientID": "p", "StudyInstanceUID": "s", "SeriesInstanceUID": "",
                   "Files": 1, "Bytes": 1, "Incomplete": False, "Defects": ""})
    set_cells(record, {column.name: "bad \ud800"}, {})
    series = SeriesRows.from_records([record], column_numbers([column]))
    layout = series_layout(series, [column])
    with pytest.raises(UnicodeError):
        sparse_csv_parts(series, layout)
    write_table(series, layout, str(tmp_path / "s.csv"), None)
    assert (tmp_path / "s.csv").read_bytes() == dense_csv([record], layout)


def test_keyword_names():
    assert keyword_name("Patient ID (0010,0020)") == "PatientID"
    assert keyword_name("Image Position (Patient) (0020,0032)") == "ImagePositionPatient"
    assert keyword_name("Referenced Image Sequence (0008,1140) [2] - Referenced SOP Instance "
                        "UID (0008,1155)") == "ReferencedImageSequence_2_ReferencedSOPInstanceUID"
    assert keyword_name("Referenced Image Sequence (0008,1140) #items") == \
        "ReferencedImageSequence_Items"
    assert keyword_name("[SIEMENS CSA HEADER] CSA Image Header Type (0029,1008)") == \
        "SIEMENSCSAHEADER_Tag_00291008"


def test_a_tag_selection_without_the_keys_still_groups_by_series(tmp_path):
    """The keys are read for grouping, not shown: not in the file table, empty in the
    series tables, and the summary and report say so."""
    root = tmp_path / "archive"
    for patient in ("77654033", "98892001"):
        shutil.copytree(os.path.join(TEST_FILES, "dicomdirtests", patient), root / patient)
    out = tmp_path / "out"
    out.mkdir()
    assert run_cli(root, "-o", out / "scan.csv", "--quiet", "--tags",
                   "Modality,InstanceNumber,ImagePositionPatient,ImageOrientationPatient") == 0
    header, table = read_csv(out / "scan.csv")
    assert header == ["DicomPath", "Modality (0008,0060)", "Instance Number (0020,0013)",
                      "Image Position (Patient) (0020,0032)",
                      "Image Orientation (Patient) (0020,0037)"]
    rows = series_rows(out)
    assert len(rows) == 6 and sum(int(row["Files"]) for row in rows) == len(table) == 14
    assert {(row["PatientID"], row["StudyInstanceUID"], row["SeriesInstanceUID"])
            for row in rows} == {("", "", "")}
    assert [row["Defects"] for row in rows if row["Defects"]] == [
        "missing instance numbers; slice gaps"]
    assert "1.3.6.1.4.1.5962" not in (out / "scan.series.csv").read_text()  # no UID shown
    studies = read_csv(out / "scan.studies.csv")[1]
    assert len(studies) == 3 and sum(int(study["Series"]) for study in studies) == 6
    summary = json.loads((out / "scan.summary.json").read_text())
    assert summary["series_keys_read_not_shown"] == [
        "Patient ID (0010,0020)", "Study Instance UID (0020,000D)",
        "Series Instance UID (0020,000E)"]
    assert 'id="hidden-keys"' in (out / "scan.report.html").read_text()


def _position(text, normal):
    """One file's position, Python's arithmetic: what ``_positions`` must give."""
    try:
        x, y, z = [float(item) for item in text.split("\\")]
    except (AttributeError, ValueError):
        return None
    return round(x * normal[0] + y * normal[1] + z * normal[2], 4) + 0.0


def test_a_partials_slice_positions_are_its_files_positions():
    """``_positions`` (numpy, a partial at once) gives each file's position exactly, and
    no positions at all when one file has none."""
    normal = _normal("1\\0\\0\\0\\0.8\\-0.6")
    rng = random.Random(5)
    texts = ["\\".join(f"{rng.uniform(-400, 400):.{rng.randint(0, 9)}f}" for _ in range(3))
             for _ in range(5000)]
    texts += [" 1.5\\2\\3 ", "1e2\\-0\\0", "-0\\0\\-0", "1_0\\2\\3", "inf\\0\\0"]
    expected = [_position(text, normal) for text in texts]
    with warnings.catch_warnings():  # inf * 0: nan, as Python gives it, and no warning
        warnings.simplefilter("error", RuntimeWarning)
        projected = _positions(texts, normal)
    assert [repr(value) for value in projected] == list(map(repr, expected))
    assert repr(_positions(["-0\\0\\-0"], normal)[0]) == "0.0"
    for bad in (None, "1\\2", "1\\2\\3\\4", "a\\b\\c", ""):
        assert _positions(texts[:10] + [bad], normal) is None
    assert _positions(texts, None) is None and _normal("1\\0\\0\\1\\0\\0") is None
