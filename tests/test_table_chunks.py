"""The vectorised table writers (transforms/output/table_chunks.py) against the plain
reference: Python's csv module over the rows, every column, in path order. Tricky texts
(commas, quotes, CR, LF, formula starts, non-ASCII), sparse and wide rows, several
shards, runs forced by a tiny budget, the formula guard on and off: the CSV must be
byte-identical, and the report's figures computed on the way must equal a read-back."""

from __future__ import annotations

import csv
import io
import os
import random

import pyarrow.parquet as pq
import pytest

from transforms.content.csv_safety import guard_fields, guarded_columns
from transforms.common.rows import PATH_COLUMN, Row
from transforms.reading.naming import order_columns
from transforms.output import shard_format, shard_merge, tables
from transforms.output.table_stats import TableStats, column_of, scan_csv
from tests.test_tables import columns_of

TEXTS = ["CT", "a,b", 'say "hi"', "line\nbreak", "cr\rx", "crlf\r\nx", "=1+2", "-3",
         "+x", "@cmd", "\tlead", " lead", "é ü 中文", "\\".join(["1", "2", "3"]), "x" * 500,
         '"', ",", "'quoted'", "20200131"]
NAMED = [column_of(keyword) for keyword in
         ("Modality", "Manufacturer", "ManufacturerModelName", "StudyDate", "PatientID",
          "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "TransferSyntaxUID")]


def make_rows(count: int, seed: int):
    generator = random.Random(seed)
    pool = NAMED + [f"Private {number:04X} (0009,{number:04X})" for number in range(1, 300)]
    vrs_of = {name: generator.choice(["LO", "CS", "DS", "UI"]) for name in pool}
    rows = []
    for number in range(count):
        path = f"/archive/{generator.choice(['a', 'b,c', 'd e'])}/{number:05d}.dcm"
        if number % 17 == 0:
            path = f'/archive/odd "quote"/-{number}.dcm'
        wide = number % 50 == 0
        names = generator.sample(pool, 250 if wide else generator.randint(0, 12))
        values = {PATH_COLUMN: path}
        vrs = {PATH_COLUMN: "UR"}
        for name in names:
            values[name] = generator.choice(TEXTS)
            # A column now and then read with another VR (two keys in one shard).
            vrs[name] = "LT" if generator.random() < 0.05 else vrs_of[name]
        rows.append(Row(path, values, vrs))
    return rows


def reference_csv(rows, guard: bool, columns) -> bytes:
    names = order_columns({name for row in rows for name in row.values})
    guarded = guarded_columns(names, columns)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(names)
    for row in sorted(rows, key=lambda row: row.path):
        fields = [row.values.get(name, "") for name in names]
        writer.writerow(guard_fields(fields, guarded) if guard else fields)
    return out.getvalue().encode()


@pytest.mark.parametrize("guard", [False, True])
@pytest.mark.parametrize("runs", [False, True])
def test_csv_is_byte_identical_to_python_csv(tmp_path, guard, runs):
    rows = make_rows(600, seed=3)
    random.Random(5).shuffle(rows)
    infos = [shard_format.write_shard(str(tmp_path / f"rows-{n}.parquet"), rows[n::6])
             for n in range(6)]
    columns = columns_of(infos)
    files = tables.TableFiles(str(tmp_path / "t.csv"), str(tmp_path / "t.parquet"))
    budget = 3 * shard_merge.reader_cost(infos[0]) if runs else shard_merge.MEMORY_BUDGET
    stats = TableStats()
    figures = tables.merge_shards(infos, columns, files, budget=budget,
                                  temp_dir=str(tmp_path), formula_guard=guard, stats=stats)
    assert figures["rows"] == 600
    written = open(files.csv, "rb").read()
    assert written == reference_csv(rows, guard, columns)
    # Parquet: the same rows and texts for the string columns (all LO/CS/UI/LT here are
    # strings; DS columns are typed and checked in test_parquet.py).
    table = pq.read_table(files.parquet)
    assert table[PATH_COLUMN].to_pylist() == sorted(row.path for row in rows)
    modality = column_of("Modality")
    by_path = {row.path: row.values.get(modality) for row in rows}
    if table.schema.field(modality).type == "string":
        assert table[modality].to_pylist() == [by_path[p] for p in sorted(by_path)]
    # The report's figures, computed while writing, equal a read-back of the CSV (of the
    # values, before the formula guard's apostrophes).
    plain = tmp_path / "plain.csv"
    plain.write_bytes(reference_csv(rows, False, columns))
    read_back = scan_csv(str(plain)).as_dict()
    assert stats.as_dict() == {**read_back, "source": files.csv}


def test_a_chunk_boundary_inside_a_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "OUTPUT_ROW_GROUP_ROWS", 7)
    rows = make_rows(100, seed=9)
    infos = [shard_format.write_shard(str(tmp_path / f"rows-{n}.parquet"), rows[n::2])
             for n in range(2)]
    columns = columns_of(infos)
    files = tables.TableFiles(str(tmp_path / "t.csv"), None)
    tables.merge_shards(infos, columns, files)
    assert open(files.csv, "rb").read() == reference_csv(rows, False, columns)


def test_rows_without_cells_and_an_empty_merge(tmp_path):
    rows = [Row(f"/{n}.dcm", {PATH_COLUMN: f"/{n}.dcm"}, {PATH_COLUMN: "UR"}) for n in range(3)]
    info = shard_format.write_shard(str(tmp_path / "rows-0.parquet"), rows)
    nothing = shard_format.write_shard(str(tmp_path / "rows-1.parquet"), [])
    assert list(shard_format.read_rows(nothing.path)) == []
    files = tables.TableFiles(str(tmp_path / "t.csv"), str(tmp_path / "t.parquet"))
    tables.merge_shards([info, nothing], columns_of([info]), files)
    assert open(files.csv, "rb").read() == b"DicomPath\r\n/0.dcm\r\n/1.dcm\r\n/2.dcm\r\n"
    empty = tables.TableFiles(str(tmp_path / "e.csv"), None)
    assert tables.merge_shards([], [], empty)["rows"] == 0
    assert os.path.getsize(empty.csv) == len(b"DicomPath\r\n")


def test_values_larger_than_a_read_buffer(tmp_path):
    # An RT Structure Set's contour data: one cell of megabytes, pages larger than any
    # small read buffer.
    big = "\\".join(f"{n}.25" for n in range(300_000))
    rows = [Row(f"/{n}.dcm", {PATH_COLUMN: f"/{n}.dcm", column_of("Modality"): big if n % 2
                              else "CT"}, {PATH_COLUMN: "UR", column_of("Modality"): "CS"})
            for n in range(6)]
    infos = [shard_format.write_shard(str(tmp_path / f"rows-{n}.parquet"), rows[n::2])
             for n in range(2)]
    columns = columns_of(infos)
    files = tables.TableFiles(str(tmp_path / "t.csv"), str(tmp_path / "t.parquet"))
    tables.merge_shards(infos, columns, files)
    assert open(files.csv, "rb").read() == reference_csv(rows, False, columns)
