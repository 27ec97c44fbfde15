"""The table merge (transforms/output/tables.py) on real shards: bounded by its memory
budget it merges in runs first, and the tables are byte-identical either way."""

from __future__ import annotations

import os

import pyarrow.parquet as pq

from transforms.output.columns import UnionColumns
from transforms.common.rows import PATH_COLUMN, Row
from transforms.output import shard_format, shard_merge, tables

DATE = "Study Date (0008,0020)"
TEXT = "Study Description (0008,1030)"


def make_shards(folder, count, rows_per_shard):
    infos, number = [], 0
    for shard in range(count):
        rows = []
        for _ in range(rows_per_shard):
            path = f"/a/{(number * 7919) % 1000:04d}-{number}.dcm"  # interleaved across shards
            values = {PATH_COLUMN: path, DATE: "2020010" + str(number % 9)}
            vrs = {PATH_COLUMN: "UR", DATE: "DA" if number % 5 else "LO"}
            if number % 3 == 0:
                values[TEXT], vrs[TEXT] = f'a, "quoted"\nline {number}', "LO"
            rows.append(Row(path, values, vrs))
            number += 1
        infos.append(shard_format.write_shard(os.path.join(folder, f"rows-{shard:03d}.parquet"),
                                              rows))
    return infos


def columns_of(infos):
    union = UnionColumns()
    accumulator = union.create_accumulator()
    for info in infos:
        union.add_input(accumulator, info.columns)
    return union.extract_output(accumulator)


def test_budget_forces_runs_and_output_is_identical(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    infos = make_shards(str(shards), 30, 7)
    columns = columns_of(infos)
    outputs = {}
    runs_budget = 3 * max(map(shard_merge.reader_cost, infos))
    for name, budget in (("one-pass", shard_merge.MEMORY_BUDGET), ("runs", runs_budget)):
        assert len(shard_merge.groups_within(infos, budget)) == (1 if name == "one-pass" else 10)
        temp = tmp_path / name
        temp.mkdir()
        files = tables.TableFiles(str(temp / "t.csv"), str(temp / "t.parquet"))
        figures = tables.merge_shards(infos, columns, files, budget=budget, temp_dir=str(temp))
        assert figures["rows"] == 210
        assert sorted(os.listdir(temp)) == ["t.csv", "t.parquet"]  # runs deleted
        outputs[name] = (open(files.csv, "rb").read(), open(files.parquet, "rb").read())
    assert outputs["one-pass"] == outputs["runs"]
    table = pq.read_table(tmp_path / "runs" / "t.parquet")
    paths = table[PATH_COLUMN].to_pylist()
    assert paths == sorted(paths) and len(set(paths)) == 210
    assert table.schema.field(DATE).type.equals("string")  # DA and LO: widened


def test_text_tables_and_their_figures_do_not_depend_on_the_chunks(tmp_path, monkeypatch):
    """Without a Parquet table the merge cuts its chunks smaller (TEXT_CHUNK_BYTES): the CSV,
    the JSON lines and the report's figures are the same bytes for any chunk size."""
    import json

    from transforms.common.rows import JSON_COLUMN
    from transforms.output.table_stats import TableStats

    shards = tmp_path / "shards"
    shards.mkdir()
    infos = []
    for shard in range(4):
        rows = []
        for number in range(shard, 60, 4):
            path = f"/a/{number:03d}.dcm"
            values = {PATH_COLUMN: path, DATE: f"2020{number % 12 + 1:02d}01",
                      JSON_COLUMN: json.dumps({"DicomPath": path, "n": number})}
            if number % 3:
                values[TEXT] = f"text {number % 7}"
            rows.append(Row(path, values, {name: "LO" for name in values}))
        infos.append(shard_format.write_shard(str(shards / f"rows-{shard}.parquet"), rows))
    columns = columns_of(infos)
    outputs = {}
    width = len(columns)
    for name, chunk_bytes in (("default", tables.TEXT_CHUNK_BYTES), ("one row", 2 * width),
                              ("seven rows", 14 * width)):
        monkeypatch.setattr(tables, "TEXT_CHUNK_BYTES", chunk_bytes)
        temp = tmp_path / name
        temp.mkdir()
        files = tables.TableFiles(str(temp / "t.csv"), None, jsonl=str(temp / "t.jsonl"))
        stats = TableStats()
        assert tables.merge_shards(infos, columns, files, temp_dir=str(temp), stats=stats
                                   )["rows"] == 60
        figures = stats.as_dict()
        figures.pop("source", None)
        outputs[name] = (open(files.csv, "rb").read(), open(files.jsonl, "rb").read(),
                         json.dumps(figures, sort_keys=True, default=str))
    assert outputs["one row"] == outputs["default"] == outputs["seven rows"]
    assert outputs["default"][0].count(b"\r\n") == 61 and outputs["default"][1].count(b"\n") == 60


def test_parquet_row_groups_keep_the_output_chunk_size(tmp_path, monkeypatch):
    """A chunk is a row group of the Parquet tables: the smaller text chunks never cut them."""
    monkeypatch.setattr(tables, "TEXT_CHUNK_BYTES", 1)
    shards = tmp_path / "shards"
    shards.mkdir()
    infos = make_shards(str(shards), 3, 7)
    files = tables.TableFiles(str(tmp_path / "t.csv"), str(tmp_path / "t.parquet"))
    tables.merge_shards(infos, columns_of(infos), files, temp_dir=str(tmp_path))
    assert pq.ParquetFile(files.parquet).metadata.num_row_groups == 1


def test_finalize_accepts_work_already_done(tmp_path):
    temp, final = tmp_path / "table-1.csv", tmp_path / "scan.csv"
    temp.write_text("x")
    tables.finalize_tables({str(temp): str(final)})
    tables.finalize_tables({str(temp): str(final)})  # a second attempt: already renamed
    assert final.read_text() == "x" and not temp.exists()


def test_json_lines_are_each_rows_text_in_path_order_and_none_is_dropped(tmp_path):
    """``scan.jsonl`` holds each row's JSON cell, UTF-8, one line per row in path order
    (written from Arrow's buffers); a row without its JSON stops the merge by name."""
    import json

    import pytest

    from transforms.common.rows import JSON_COLUMN

    NAMES = ["Hôpital Saint-Éloi", "山田^太郎", "🙂"]  # one, two and four UTF-8 bytes

    def rows_of(numbers, without=None):
        rows = []
        for number in numbers:
            path = f"/a/{number:03d}.dcm"
            values = {PATH_COLUMN: path, TEXT: f"text {number}"}
            if number != without:
                values[JSON_COLUMN] = json.dumps(
                    {"DicomPath": path, "name": NAMES[number % 3], "n": number},
                    ensure_ascii=False)
            rows.append(Row(path, values, {name: "LO" for name in values}))
        return rows

    shards = tmp_path / "shards"
    shards.mkdir()
    infos = [shard_format.write_shard(str(shards / f"rows-{shard}.parquet"),
                                      rows_of(range(shard, 40, 3))) for shard in range(3)]
    files = tables.TableFiles(str(tmp_path / "t.csv"), None, jsonl=str(tmp_path / "t.jsonl"))
    assert tables.merge_shards(infos, columns_of(infos), files, temp_dir=str(tmp_path)
                               )["json_rows"] == 40
    expected = "".join(json.dumps({"DicomPath": f"/a/{number:03d}.dcm",
                                   "name": NAMES[number % 3], "n": number},
                                  ensure_ascii=False) + "\n"
                       for number in range(40))
    assert open(files.jsonl, "rb").read() == expected.encode("utf-8")

    broken = [shard_format.write_shard(str(shards / "rows-broken.parquet"),
                                       rows_of(range(5), without=3))]
    files = tables.TableFiles(None, None, jsonl=str(tmp_path / "broken.jsonl"))
    with pytest.raises(RuntimeError, match=r"1 rows have no DICOM JSON, e\.g\. /a/003\.dcm"):
        tables.merge_shards(broken, columns_of(broken), files, temp_dir=str(tmp_path))
