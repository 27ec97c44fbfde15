"""The row shard format (transforms/output/shard_format.py), read back with pyarrow and
DuckDB: sorted by path, string columns, VRs and version in the metadata."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.common.rows import Row
from transforms.output import shard_format as sf

DATE = "Study Date (0008,0020)"
MODALITY = "Modality (0008,0060)"


def rows():
    return [
        Row("b.dcm", {"DicomPath": "b.dcm", DATE: "20200101"}, {"DicomPath": "UR", DATE: "DA"}),
        Row("a.dcm", {"DicomPath": "a.dcm", DATE: "yesterday", MODALITY: "CT"},
            {"DicomPath": "UR", DATE: "LO", MODALITY: "CS"}),
    ]


def test_shard_layout_and_metadata(tmp_path):
    path = str(tmp_path / "rows-1.parquet")
    info = sf.write_shard(path, rows())
    assert info.rows == 2 and info.columns[DATE] == {"DA", "LO"}
    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    assert schema.names == ["DicomPath", sf.SIZE_COLUMN, sf.MTIME_COLUMN,
                            sf.CELLS_COLUMN, sf.VALUES_COLUMN]
    assert schema.metadata[b"dicom_meta.format"] == sf.FORMAT_NAME.encode()
    assert schema.metadata[b"dicom_meta.format_version"] == b"2"
    # Keys in column order, a column read with two VRs has two keys.
    keys = json.loads(schema.metadata[b"dicom_meta.keys"])
    assert keys == [[DATE, "DA"], [DATE, "LO"], [MODALITY, "CS"]]
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    got = duckdb.sql(f"SELECT DicomPath, _cells, _values FROM '{path}'").fetchall()
    assert got == [("a.dcm", [1, 2], ["yesterday", "CT"]),  # sorted by path
                   ("b.dcm", [0], ["20200101"])]


def test_row_groups_are_bounded_by_rows_and_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(sf, "ROW_GROUP_BYTES", 1000)
    many = [Row(f"{i:04d}.dcm", {"DicomPath": f"{i:04d}.dcm", DATE: "x" * 300},
                {"DicomPath": "UR", DATE: "LO"}) for i in range(20)]
    path = str(tmp_path / "rows-4.parquet")
    sf.write_shard(path, many)
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [3] * 6 + [2]
    assert [row.path for row in sf.read_rows(path)] == [row.path for row in many]


def test_rows_round_trip(tmp_path):
    path = str(tmp_path / "rows-2.parquet")
    sf.write_shard(path, rows())
    back = list(sf.read_rows(path))
    assert [row.path for row in back] == ["a.dcm", "b.dcm"]
    for original, read in zip(sorted(rows()), back):
        assert read.values == original.values and read.vrs == original.vrs
    assert sf.read_info(path).columns[MODALITY] == {"CS"}


@pytest.mark.parametrize("damage", ["foreign", "version", "garbage"])
def test_foreign_or_other_version_is_refused(tmp_path, damage):
    path = str(tmp_path / "rows-3.parquet")
    if damage == "garbage":
        (tmp_path / "rows-3.parquet").write_bytes(b"PAR1 not really")
    else:
        table = pa.table({"DicomPath": ["a"]})
        if damage == "version":
            table = table.replace_schema_metadata({
                b"dicom_meta.format": sf.FORMAT_NAME.encode(),
                b"dicom_meta.format_version": b"99"})
        pq.write_table(table, path)
    with pytest.raises(sf.ShardFormatError):
        sf.read_info(path)
