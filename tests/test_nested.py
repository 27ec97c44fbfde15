"""``--format nested`` (issue 20): keyword-named nested Parquet, loaded as it is by DuckDB
and written to a real Delta table with the ``deltalake`` package; names and limits
checked against BigQuery's documented rules (names of letters, digits and underscores
starting with a letter or underscore, at most 300 characters; 15 nested levels; 10,000
columns)."""

from __future__ import annotations

import csv
import json
import os
import re
import warnings

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from beam_pipeline.cli import main
from tests.conftest import CHARSET_FILES, TEST_FILES, make_dataset, write_dicom
from transforms.output.nested import MAX_DEPTH, MAX_LEAVES, OTHER, NestedSchema

BIGQUERY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
ITEMS = 25


def run(output, *flags, inputs) -> dict:
    assert main([*map(str, inputs), "-o", str(output), "--quiet", *map(str, flags)]) == 0
    with open(str(output)[: -len(".csv")] + ".summary.json", encoding="utf-8") as stream:
        return json.load(stream)


def long_sequence_file(folder) -> str:
    items = []
    for number in range(1, ITEMS + 1):
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = f"1.2.3.{number}"
        items.append(item)
    dataset = make_dataset(PatientName="Long^Sequence", PatientID="L1",
                           ReferencedImageSequence=Sequence(items))
    return write_dicom(os.path.join(folder, "long_sequence.dcm"), dataset)


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nested")
    extra = long_sequence_file(folder)
    summary = run(folder / "scan.csv", "--format", "csv,nested", "--include-private",
                  "--direct_runner_bundle_repeat=1", inputs=(TEST_FILES, CHARSET_FILES, extra))
    return folder, summary


def is_record(field) -> bool:
    kind = field.type.value_type if pa.types.is_list(field.type) else field.type
    return pa.types.is_struct(kind)


def all_fields(fields, depth=1):
    for field in fields:
        yield field, depth
        kind = field.type
        if pa.types.is_list(kind):
            kind = kind.value_type
        if pa.types.is_struct(kind):
            yield from all_fields([kind.field(i) for i in range(kind.num_fields)], depth + 1)


def test_one_row_per_file_keyword_names_within_bigquery_limits(nested):
    folder, summary = nested
    table = pq.read_table(folder / "scan.nested.parquet")
    assert table.num_rows == summary["rows"] == summary["nested_rows"] > 150
    assert table.column_names[0] == "DicomPath"
    assert {"PatientID", "StudyDate", "Modality", OTHER} <= set(table.column_names)
    fields = list(all_fields(table.schema))
    for field, depth in fields:
        assert BIGQUERY_NAME.fullmatch(field.name), field.name
        assert depth <= MAX_DEPTH or not is_record(field)
    assert sum(1 for field, _ in fields if not is_record(field)) <= MAX_LEAVES
    # Types by VR, as the flat Parquet.
    schema = table.schema
    assert schema.field("StudyDate").type == pa.date32()
    assert schema.field("Rows").type == pa.int64()
    assert schema.field("PixelSpacing").type == pa.list_(pa.float64())
    # Top-level fields in tag order.
    tags = [f.metadata[b"dicom_tag"].decode() for f in schema if f.metadata]
    assert tags == sorted(tags)
    # The same rows as the CSV, in the same order.
    with open(folder / "scan.csv", newline="", encoding="utf-8") as stream:
        csv_paths = [row["DicomPath"] for row in csv.DictReader(stream)]
    assert table.column("DicomPath").to_pylist() == csv_paths


def test_duckdb_group_by_and_unnest(nested):
    folder, _ = nested
    path = str(folder / "scan.nested.parquet")
    flat = duckdb.sql(f"""SELECT "Modality (0008,0060)" AS m, count(*) FROM read_csv('{folder / "scan.csv"}',
                      all_varchar=true) GROUP BY m""").fetchall()
    nested_counts = duckdb.sql(
        f"SELECT Modality, count(*) FROM read_parquet('{path}') GROUP BY Modality").fetchall()
    assert sorted(nested_counts, key=str) == sorted(flat, key=str)
    # Every item of a 25-item sequence, in order (the flat table cuts at 16).
    uids = duckdb.sql(
        f"""SELECT item.ReferencedSOPInstanceUID FROM (
              SELECT unnest(ReferencedImageSequence) AS item FROM read_parquet('{path}')
              WHERE DicomPath LIKE '%long_sequence.dcm')""").fetchall()
    assert [uid for (uid,) in uids] == [f"1.2.3.{n}" for n in range(1, ITEMS + 1)]
    # UNNEST over a real file's sequence equals pydicom's items.
    rtplan = os.path.join(TEST_FILES, "rtplan.dcm")
    beams = duckdb.sql(
        f"""SELECT b.BeamNumber, b.BeamName, b.NumberOfControlPoints FROM (
              SELECT unnest(BeamSequence) AS b FROM read_parquet('{path}')
              WHERE DicomPath = '{rtplan}')""").fetchall()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [(int(b.BeamNumber), b.BeamName, int(b.NumberOfControlPoints))
                    for b in dcmread(rtplan).BeamSequence]
    assert beams == expected and len(beams) > 0


def test_delta_table_round_trip(nested, tmp_path):
    folder, _ = nested
    table = pq.read_table(folder / "scan.nested.parquet")
    write_deltalake(str(tmp_path / "delta"), table)
    back = DeltaTable(str(tmp_path / "delta")).to_pyarrow_table()
    assert back.num_rows == table.num_rows
    assert back.column("DicomPath").to_pylist() == table.column("DicomPath").to_pylist()
    assert back.column("ReferencedImageSequence").to_pylist() == \
        table.column("ReferencedImageSequence").to_pylist()


def test_private_elements_in_other_elements(nested):
    folder, _ = nested
    table = pq.read_table(folder / "scan.nested.parquet", columns=["DicomPath", OTHER])
    rows = {os.path.basename(p): o for p, o in zip(table.column("DicomPath").to_pylist(),
                                                   table.column(OTHER).to_pylist())}
    others = {entry["Tag"]: entry for entry in rows["CT_small.dcm"]}
    assert others["00091001"]["Creator"] == "GEMS_IDEN_01"
    assert json.loads(others["00091001"]["Value"]) == ["GE_GENESIS_FF"]


def test_limits_turn_sequences_into_json_text():
    def deep(level: int) -> dict:
        item = {"00100020": {"vr": "LO", "Value": [f"level {level}"]}}
        if level < MAX_DEPTH + 3:
            item["00081140"] = {"vr": "SQ", "Value": [deep(level + 1)]}
        return item

    union = NestedSchema()
    union.add(deep(1))
    schema = union.arrow_schema()
    depths = [depth for field, depth in all_fields(schema) if is_record(field)]
    assert max(depths) == MAX_DEPTH  # records nest 15 levels deep, no deeper
    assert union.json_columns() and "ReferencedImageSequence_json" in str(schema)
    # Too many leaves: the widest sequence becomes JSON text.
    from pydicom.datadict import DicomDictionary
    keys = [f"{tag:08X}" for tag, entry in sorted(DicomDictionary.items())
            if entry[0] in ("LO", "CS", "SH") and entry[4] and tag >> 16 != 2][:3000]
    wide = NestedSchema()
    sequences = [f"{tag:08X}" for tag, entry in sorted(DicomDictionary.items())
                 if entry[0] == "SQ" and entry[4]][:8]
    assert len(keys) * len(sequences) > MAX_LEAVES > len(keys) * (len(sequences) - 1)
    for sequence in sequences:
        wide.add({sequence: {"vr": "SQ", "Value": [
            {key: {"vr": "LO", "Value": ["x"]} for key in keys}]}})
    schema = wide.arrow_schema()
    leaves = sum(1 for field, _ in all_fields(schema) if not is_record(field))
    assert leaves <= MAX_LEAVES and len(wide.json_columns()) == 1


def test_the_file_made_shard_by_shard_is_the_same_whatever_the_sharding(tmp_path,
                                                                       monkeypatch):
    """``scan.nested.parquet`` from its rows converted shard by shard (``nested_file.py``):
    the schema combined from each shard's union in a pipeline (bundles repeated, partial
    unions merged in any order) is the union of every document, and the file merged from
    rows spread over four shards at random is the file of the same rows in one shard,
    byte for byte, row groups cut alike (made small here, as are the converted batches,
    so that the merge crosses both)."""
    import random

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.common.rows import JSON_COLUMN, PATH_COLUMN, Row
    from transforms.output import nested_file, shard_format
    from transforms.output.documents import NestedUnion, UnionSchemas, shard_schema

    run(tmp_path / "scan.csv", "--format", "json,nested", "--include-private",
        inputs=(TEST_FILES, CHARSET_FILES, long_sequence_file(tmp_path)))
    lines = (tmp_path / "scan.jsonl").read_text(encoding="utf-8").splitlines()
    everything = NestedSchema()
    for line in lines:
        everything.add(json.loads(line))
    assert len(lines) > 100 and everything.root.items and everything.root.other
    paths = [json.loads(line)["DicomPath"] for line in lines]
    rows = [Row(path, {PATH_COLUMN: path, JSON_COLUMN: line}, {JSON_COLUMN: None})
            for path, line in zip(paths, lines)]
    random.Random(4).shuffle(rows)
    shards = [shard_format.write_shard(str(tmp_path / f"rows-{n}.parquet"), rows[n::4])
              for n in range(4)]
    with beam.Pipeline(options=PipelineOptions(["--direct_runner_bundle_repeat=1"])) as p:
        union = p | beam.Create(shards) | NestedUnion()
        assert_that(union, equal_to([everything.as_data()]))
    combine = UnionSchemas()
    partials = [combine.add_input(combine.create_accumulator(), shard_schema(shard))
                for shard in reversed(shards)]
    assert combine.extract_output(combine.merge_accumulators(partials)) == \
        everything.as_data()

    monkeypatch.setattr(nested_file, "CONVERT_ROWS", 5)
    monkeypatch.setattr(nested_file, "GROUP_ROWS", 7)
    one = [shard_format.write_shard(str(tmp_path / "rows-all.parquet"), rows)]
    written = []
    for group in (shards, one):
        converted = [nested_file.convert_shard(shard, everything.as_data(), str(tmp_path))
                     for shard in group]
        figures = nested_file.write_file(None, converted, everything.as_data(), "final",
                                         str(tmp_path))
        (temp,) = figures.pop("renames")
        assert figures["nested_rows"] == len(lines)
        written.append((pq.ParquetFile(temp).metadata.num_row_groups,
                        open(temp, "rb").read()))
    assert written[0] == written[1]
    assert written[0][0] == -(-len(lines) // 7)
    # And it is the pipeline's file, whose row groups are cut at their own sizes.
    table = pq.read_table(tmp_path / "scan.nested.parquet")
    assert pq.read_table(pa.BufferReader(written[0][1])).equals(table)
    assert table.column("DicomPath").to_pylist() == sorted(paths)


def test_unparseable_counts_of_every_converter_add_up():
    """The summary's ``nested_unparseable_*`` from each shard's or part's converter, the
    same whatever their order (the single file and the parts both report them)."""
    from transforms.output.nested_rows import unparseable_figures

    counts = [{"StudyDate": 2}, {}, {"StudyDate": 1, "Rows": 4}]
    expected = {"nested_unparseable_values": 7,
                "nested_unparseable_by_column": {"Rows": 4, "StudyDate": 3}}
    assert unparseable_figures(counts) == expected
    assert list(unparseable_figures(reversed(counts))["nested_unparseable_by_column"]) == \
        ["Rows", "StudyDate"]
