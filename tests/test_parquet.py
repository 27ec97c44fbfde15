"""Parquet output (issue #6): real DirectRunner runs on pydicom's bundled files plus a few
files generated with pydicom, read back with pandas, polars and DuckDB."""

from __future__ import annotations

import csv
import datetime
import json
import os
import warnings

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom.data
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

from beam_pipeline.cli import main
from transforms.output import shard_format, tables
from transforms.report.summary import OutputPaths
from transforms.output.types import column_type, column_vm, parse_dt, parse_int, parse_tm

DATA = os.path.dirname(pydicom.data.__file__)
TEST_FILES = os.path.join(DATA, "test_files")
CHARSET_FILES = os.path.join(DATA, "charset_files")
CT_SMALL = os.path.join(TEST_FILES, "CT_small.dcm")

STUDY_DATE = "Study Date (0008,0020)"
STUDY_TIME = "Study Time (0008,0030)"
PYARROW_MAJOR = int(pa.__version__.split(".")[0])
ACQ_DATETIME = "Acquisition DateTime (0008,002A)"
PIXEL_SPACING = "Pixel Spacing (0028,0030)"
SLICE_THICKNESS = "Slice Thickness (0018,0050)"
ROWS = "Rows (0028,0010)"
IMAGE_TYPE = "Image Type (0008,0008)"
PATIENT_NAME = "Patient's Name (0010,0010)"


def write_dicom(path, elements=(), **keywords):
    """A small Secondary Capture file written with pydicom (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4." + str(abs(hash(str(path))) % 10**12)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    with warnings.catch_warnings():  # pydicom warns about the deliberately bad values
        warnings.simplefilter("ignore")
        for keyword, value in keywords.items():
            setattr(dataset, keyword, value)
        for tag, vr, value in elements:
            # Raw bytes: pydicom would refuse to hold a malformed DS such as 0.5\abc.
            raw = value.encode("ascii")
            raw += b" " * (len(raw) % 2)
            dataset[tag] = RawDataElement(Tag(tag), vr, len(raw), raw, 0, False, True)
        dataset.save_as(str(path), enforce_file_format=True)
    return str(path)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generated")
    return {
        "bad_day": write_dicom(
            folder / "bad_day.dcm", StudyDate="20230231", StudyTime="132645.921",
            AcquisitionDateTime="20230115093000.123456+0100", PixelSpacing="0.5\\0.25",
        ),
        "bad_text": write_dicom(
            folder / "bad_text.dcm", StudyDate="2023XX01", StudyTime="0930",
            AcquisitionDateTime="2023", elements=[(0x00280030, "DS", "0.5\\abc")],
        ),
        # Study Date written with VR LO conflicts with DA: the column widens to string.
        "lo_date": write_dicom(
            folder / "lo_date.dcm", elements=[(0x00080020, "LO", "yesterday")]
        ),
    }


def run_cli(tmp_path, inputs, output_name, *flags):
    output = str(tmp_path / output_name)
    assert main([*inputs, "-o", output, "--quiet", *flags]) == 0
    stem = output.rsplit(".", 1)[0]
    with open(stem + ".summary.json", encoding="utf-8") as stream:
        return stem, json.load(stream)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as stream:
        header, *rows = list(csv.reader(stream))
    return header, rows


@pytest.fixture(scope="module")
def both(tmp_path_factory, generated):
    """One run over the real test and charset files plus the bad-date file."""
    tmp_path = tmp_path_factory.mktemp("both")
    inputs = [TEST_FILES, CHARSET_FILES, generated["bad_day"], generated["bad_text"]]
    stem, summary = run_cli(tmp_path, inputs, "scan.csv", "--format", "csv,parquet")
    return stem, summary


def row_of(frame_rows, path_column, path):
    [row] = [row for row in frame_rows if row[path_column] == path]
    return row


def test_both_formats_written_and_listed(both):
    stem, summary = both
    assert summary["outputs"] == [stem + ".csv", stem + ".parquet"]
    assert summary["table"] == stem + ".csv"
    assert os.path.exists(stem + ".csv") and os.path.exists(stem + ".parquet")
    assert summary["parquet_rows"] == summary["rows"] > 150
    assert summary["accounted_for"]
    assert not [name for name in os.listdir(os.path.dirname(stem)) if ".tmp-" in name]


def test_same_columns_rows_and_order_as_csv(both):
    stem, _ = both
    header, rows = read_csv(stem + ".csv")
    table = pq.read_table(stem + ".parquet")
    assert table.column_names == header
    assert header[0] == "DicomPath"
    assert table.column("DicomPath").to_pylist() == [row[0] for row in rows]
    # String columns hold exactly the CSV text; absent values are null, never "".
    for index, name in enumerate(header):
        field = table.schema.field(name)
        values = table.column(name).to_pylist()
        for row, value in zip(rows, values):
            if row[index] == "":
                assert value is None, name
            elif pa.types.is_string(field.type):
                assert value == row[index], name


def test_types_from_vr(both):
    stem, _ = both
    schema = pq.read_schema(stem + ".parquet")
    assert schema.field("DicomPath").type == pa.string()
    assert schema.field(STUDY_TIME).type == pa.time64("us")
    assert schema.field(ACQ_DATETIME).type == pa.timestamp("us")
    assert schema.field(PIXEL_SPACING).type == pa.list_(pa.float64())  # VM 2
    assert schema.field(SLICE_THICKNESS).type == pa.float64()  # DS, VM 1
    assert schema.field(ROWS).type == pa.int64()  # US
    assert schema.field(IMAGE_TYPE).type == pa.list_(pa.string())  # CS, VM 2-n
    assert schema.field(PATIENT_NAME).type == pa.string()
    assert schema.field(PIXEL_SPACING).metadata == {b"dicom_vr": b"DS", b"dicom_vm": b"2"}
    # Study Date is DA in every file of this run.
    assert schema.field(STUDY_DATE).type == pa.date32()


def test_pandas_reads_typed_values(both, generated):
    stem, _ = both
    frame = pd.read_parquet(stem + ".parquet")
    ct = frame.set_index("DicomPath").loc[CT_SMALL]
    assert ct[STUDY_DATE] == datetime.date(2004, 1, 19)
    assert ct[STUDY_TIME] == datetime.time(7, 27, 30)
    assert list(ct[PIXEL_SPACING]) == [0.661468, 0.661468]
    assert ct[SLICE_THICKNESS] == 5.0
    assert ct[ROWS] == 128
    bad = frame.set_index("DicomPath").loc[generated["bad_day"]]
    assert pd.isna(bad[STUDY_DATE])  # 20230231 is no date
    assert bad[STUDY_TIME] == datetime.time(13, 26, 45, 921000)
    assert bad[ACQ_DATETIME] == pd.Timestamp("2023-01-15 09:30:00.123456")
    assert list(bad[PIXEL_SPACING]) == [0.5, 0.25]


def test_polars_reads_typed_values(both, generated):
    stem, _ = both
    frame = pl.read_parquet(stem + ".parquet")
    assert frame.schema[STUDY_DATE] == pl.Date
    assert frame.schema[STUDY_TIME] == pl.Time
    assert frame.schema[ACQ_DATETIME] == pl.Datetime("us")
    assert frame.schema[PIXEL_SPACING] == pl.List(pl.Float64)
    assert frame.schema[ROWS] == pl.Int64
    bad_text = frame.filter(pl.col("DicomPath") == generated["bad_text"]).row(0, named=True)
    assert bad_text[STUDY_DATE] is None  # 2023XX01
    assert bad_text[STUDY_TIME] == datetime.time(9, 30)  # partial HHMM
    assert bad_text[ACQ_DATETIME] == datetime.datetime(2023, 1, 1)  # partial YYYY
    assert bad_text[PIXEL_SPACING] is None  # one item is not a number: the value is null
    ct = frame.filter(pl.col("DicomPath") == CT_SMALL).row(0, named=True)
    assert ct[PIXEL_SPACING] == [0.661468, 0.661468]


def test_duckdb_reads_typed_values(both, generated):
    stem, _ = both
    connection = duckdb.connect()
    types = dict(
        connection.execute(
            "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
            [stem + ".parquet"],
        ).fetchall()
    )
    assert types[STUDY_DATE] == "DATE"
    # pyarrow before 22 writes every Parquet TIME as adjusted to UTC (apache/arrow#41476),
    # which DuckDB reads as TIME WITH TIME ZONE; Beam 2.70 caps pyarrow below 19.
    assert types[STUDY_TIME] == ("TIME" if PYARROW_MAJOR >= 22 else "TIME WITH TIME ZONE")
    assert types[ACQ_DATETIME] == "TIMESTAMP"
    assert types[PIXEL_SPACING] == "DOUBLE[]"
    assert types[ROWS] == "BIGINT"
    date, spacing, time = connection.execute(
        f'SELECT "{STUDY_DATE}", "{PIXEL_SPACING}", "{STUDY_TIME}" '
        "FROM read_parquet(?) WHERE DicomPath = ?",
        [stem + ".parquet", CT_SMALL],
    ).fetchone()
    assert date == datetime.date(2004, 1, 19)
    assert spacing == [0.661468, 0.661468]
    assert time.replace(tzinfo=None) == datetime.time(7, 27, 30)
    null_dates = connection.execute(
        f'SELECT DicomPath FROM read_parquet(?) WHERE "{STUDY_DATE}" IS NULL '
        "AND DicomPath LIKE '%bad_%' ORDER BY DicomPath",
        [stem + ".parquet"],
    ).fetchall()
    assert [path for (path,) in null_dates] == sorted([generated["bad_day"], generated["bad_text"]])


def test_bad_values_counted_and_raw_text_kept_in_csv(both, generated):
    stem, summary = both
    by_column = summary["parquet_unparseable_by_column"]
    assert by_column[STUDY_DATE] == 2  # 20230231 and 2023XX01
    assert by_column[PIXEL_SPACING] == 1  # 0.5\abc
    assert summary["parquet_unparseable_values"] == sum(by_column.values())
    header, rows = read_csv(stem + ".csv")
    dates = {row[0]: row[header.index(STUDY_DATE)] for row in rows}
    assert dates[generated["bad_day"]] == "20230231"
    assert dates[generated["bad_text"]] == "2023XX01"


def test_conflicting_vrs_widen_to_string(tmp_path, generated):
    inputs = [CT_SMALL, generated["lo_date"]]
    stem, summary = run_cli(tmp_path, inputs, "scan.parquet", "--format", "parquet")
    assert summary["outputs"] == [stem + ".parquet"]
    assert not os.path.exists(stem + ".csv")
    table = pq.read_table(stem + ".parquet")
    assert table.schema.field(STUDY_DATE).type == pa.string()
    assert table.schema.field(STUDY_DATE).metadata[b"dicom_vr"] == b"DA\\LO"
    assert dict(zip(table["DicomPath"].to_pylist(), table[STUDY_DATE].to_pylist())) == {
        CT_SMALL: "20040119", generated["lo_date"]: "yesterday",
    }
    assert summary["parquet_unparseable_values"] == 0


def test_private_tag_without_dictionary_vm_is_a_list(tmp_path):
    path = write_dicom(
        tmp_path / "private.dcm",
        elements=[(0x00110010, "LO", "ACME 1.0"), (0x00111001, "DS", "1.5\\2.5"),
                  (0x00111002, "LO", "a\\b")],
    )
    stem, _ = run_cli(tmp_path, [path], "scan.parquet", "--format", "parquet",
                      "--include-private")
    table = pq.read_table(stem + ".parquet")
    assert table["[ACME 1.0] (0011,1001)"].to_pylist() == [[1.5, 2.5]]
    assert table["[ACME 1.0] (0011,1002)"].to_pylist() == ["a\\b"]  # text is never split on a guess


def test_schema_and_content_do_not_depend_on_sharding(tmp_path, monkeypatch, both, generated):
    """Tiny shards, part row groups and output row groups force a real k-way merge."""
    stem, _ = both
    reference = pq.read_table(stem + ".parquet")
    monkeypatch.setattr(shard_format, "ROW_GROUP_ROWS", 8)
    monkeypatch.setattr(tables, "OUTPUT_ROW_GROUP_ROWS", 40)
    inputs = [TEST_FILES, CHARSET_FILES, generated["bad_day"], generated["bad_text"]]
    small_stem, _ = run_cli(
        tmp_path, inputs, "small.csv", "--format", "csv,parquet", "--rows-per-shard", "20"
    )
    small = pq.read_table(small_stem + ".parquet")
    row_groups = pq.ParquetFile(small_stem + ".parquet").metadata.num_row_groups
    assert row_groups == -(-small.num_rows // 40) > 1
    assert small.schema.equals(reference.schema, check_metadata=True)
    assert small.equals(reference)
    header, rows = read_csv(small_stem + ".csv")
    assert small["DicomPath"].to_pylist() == [row[0] for row in rows]


def test_format_is_validated(tmp_path, capsys):
    assert main([CT_SMALL, "-o", str(tmp_path / "x.csv"), "--format", "xlsx"]) == 2
    assert "--format" in capsys.readouterr().err


def test_column_vm_and_types():
    assert column_vm(PIXEL_SPACING) == "2"
    assert column_vm("Referenced Image Sequence (0008,1140) - Referenced SOP Instance UID "
                     "(0008,1155)") == "1"
    assert column_vm("Referenced Series Sequence (0008,1115) [2] - Window Center "
                     "(0028,1050)") == "1-n"
    assert column_vm("Referenced Image Sequence (0008,1140) #items") == "1"
    assert column_vm("Unknown (0009,1234)") == ""
    assert column_type(ROWS, {"US", "SS"}) == pa.int64()  # same type: no conflict
    assert column_type(ROWS, {"US", "DS"}) == pa.string()


def test_parsers_edge_cases():
    assert parse_tm("07") == datetime.time(7)
    assert parse_tm("120000.") == datetime.time(12)  # empty fraction: one meaning
    assert parse_tm("14:04:38") == datetime.time(14, 4, 38)  # ACR-NEMA form
    assert parse_dt("2011052514") == datetime.datetime(2011, 5, 25, 14)
    for bad in ("2460", "1261", "12:", ""):
        with pytest.raises(ValueError):
            parse_tm(bad)
    with pytest.raises(ValueError):
        parse_dt("20230101+2500")
    assert parse_int("+12") == 12
    for bad in ("1_000", "1.0", str(1 << 63)):  # UV beyond int64 is unparseable
        with pytest.raises(ValueError):
            parse_int(bad)


@pytest.mark.parametrize(
    "output, formats, expected",
    [
        ("d/scan.csv", ["csv", "parquet"], ["d/scan.csv", "d/scan.parquet"]),
        ("d/scan.parquet", ["parquet"], ["d/scan.parquet"]),
        ("d/scan.parquet", ["csv", "parquet"], ["d/scan.csv", "d/scan.parquet"]),
        ("d/scan.parquet", ["csv"], ["d/scan.csv"]),  # never CSV text in a .parquet file
        ("d/scan", ["csv", "parquet"], ["d/scan", "d/scan.parquet"]),
    ],
)
def test_output_naming(output, formats, expected):
    paths = OutputPaths.for_output(output, "run", formats)
    assert paths.outputs == expected
    assert paths.summary == "d/scan.summary.json"


def test_run_without_dicom_writes_an_empty_typed_file(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    stem, summary = run_cli(tmp_path, [str(tmp_path / "in")], "scan.parquet",
                            "--format", "parquet")
    table = pq.read_table(stem + ".parquet")
    assert table.column_names == ["DicomPath"] and table.num_rows == 0
    assert summary["rows"] == 0 and summary["parquet_unparseable_values"] == 0


def test_incremental_rerun_gives_the_same_parquet(tmp_path, generated):
    """A re-run that reuses the kept row shards writes the same typed table."""
    archive = tmp_path / "archive"
    archive.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        (archive / name).write_bytes(open(os.path.join(TEST_FILES, name), "rb").read())
    (archive / "bad_day.dcm").write_bytes(open(generated["bad_day"], "rb").read())
    flags = ("--format", "csv,parquet", "--incremental")
    stem, first = run_cli(tmp_path, [str(archive)], "scan.csv", *flags)
    table = pq.read_table(stem + ".parquet")
    _, second = run_cli(tmp_path, [str(archive)], "scan.csv", *flags)
    assert pq.read_table(stem + ".parquet").equals(table)
    assert second["parquet_unparseable_by_column"] == first["parquet_unparseable_by_column"] == {
        STUDY_DATE: 1
    }
    assert second["parquet_rows"] == 4
