"""``-o FOLDER/ --format nested`` (issue 20): the nested table as a Parquet dataset of
parts written in parallel, read as one table by DuckDB, pyarrow and a real Delta table;
reruns replace the parts; the same in gs:// and s3:// buckets (emulators on 127.0.0.1).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import uuid

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from deltalake import DeltaTable, write_deltalake

import storage_servers as ss
from beam_pipeline.cli import main
from tests.conftest import CHARSET_FILES, TEST_FILES
from tests.test_nested import ITEMS, long_sequence_file
from transforms.common.rows import JSON_COLUMN, PATH_COLUMN, Row
from transforms.inputs import storage
from transforms.output import shard_format
from transforms.output.nested_parts import PART_NAME, part_name, plan_parts, read_slice

BUCKET = "nested-parts"
ROWS_PER_PART = 16


def run(*args) -> int:
    return main([str(arg) for arg in args] + ["--quiet"])


def summary_of(stem) -> dict:
    with open(f"{stem}.summary.json", encoding="utf-8") as stream:
        return json.load(stream)


def part_files(folder) -> list[str]:
    return sorted(os.listdir(folder))


def part_bytes(folder) -> dict:
    return {name: (folder / name).read_bytes() for name in part_files(folder)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same files written as one nested file and as a dataset of parts."""
    root = tmp_path_factory.mktemp("parts")
    inputs = (TEST_FILES, CHARSET_FILES, long_sequence_file(root))
    flags = ("--format", "csv,nested", "--include-private")
    assert run(*inputs, "-o", root / "one.csv", *flags) == 0
    # Every bundle runs twice: the parts must not notice.
    assert run(*inputs, "-o", f"{root / 'scan'}/", *flags, "--rows-per-part", ROWS_PER_PART,
               "--direct_runner_bundle_repeat=1") == 0
    return root


def test_the_parts_are_the_single_file_cut_in_path_order(runs):
    single = pq.read_table(runs / "one.nested.parquet")
    summary = summary_of(runs / "scan")
    count = math.ceil(single.num_rows / ROWS_PER_PART)
    assert count > 5
    assert part_files(runs / "scan") == [part_name(n, count) for n in range(count)]
    parts = [pq.read_table(runs / "scan" / name) for name in part_files(runs / "scan")]
    assert [part.num_rows for part in parts] == \
        [ROWS_PER_PART] * (count - 1) + [single.num_rows - ROWS_PER_PART * (count - 1)]
    for part in parts:  # one schema, field metadata (tags, VRs) included
        assert part.schema.equals(single.schema, check_metadata=True)
    assert pa.concat_tables(parts).equals(single)
    assert summary["nested_parts"] == count
    assert summary["nested_rows"] == summary["rows"] == single.num_rows
    assert summary["nested_columns"] == single.num_columns
    assert summary["outputs"] == [str(runs / "scan.csv"), f"{runs / 'scan'}/"]
    # Everything else lies beside the folder, and is what a single-file run writes.
    assert (runs / "scan.csv").read_bytes() == (runs / "one.csv").read_bytes()
    assert {name for name in os.listdir(runs) if name.startswith("scan")} == {
        "scan", "scan.csv", "scan.errors.csv", "scan.skipped.csv", "scan.summary.json",
        "scan.report.html", "scan.series.csv", "scan.studies.csv", "scan.state"}
    report = (runs / "scan.report.html").read_text(encoding="utf-8")
    assert f'data-figure="rows" data-value="{single.num_rows}"' in report


def test_duckdb_pyarrow_and_delta_read_the_folder_as_one_table(runs, tmp_path):
    single = str(runs / "one.nested.parquet")
    glob = f"{runs / 'scan'}/*.parquet"
    by_modality = "SELECT Modality, count(*) FROM read_parquet('{}') GROUP BY Modality"
    assert sorted(duckdb.sql(by_modality.format(glob)).fetchall(), key=str) == \
        sorted(duckdb.sql(by_modality.format(single)).fetchall(), key=str)
    uids = duckdb.sql(
        f"""SELECT item.ReferencedSOPInstanceUID FROM (
              SELECT unnest(ReferencedImageSequence) AS item FROM read_parquet('{glob}')
              WHERE DicomPath LIKE '%long_sequence.dcm')""").fetchall()
    assert [uid for (uid,) in uids] == [f"1.2.3.{n}" for n in range(1, ITEMS + 1)]
    dataset = ds.dataset(str(runs / "scan"), format="parquet")
    table = dataset.to_table()
    assert table.equals(pq.read_table(single))
    write_deltalake(str(tmp_path / "delta"), dataset.scanner().to_reader())  # streamed
    back = DeltaTable(str(tmp_path / "delta")).to_pyarrow_table().sort_by("DicomPath")
    assert back.num_rows == table.num_rows
    assert back.column("DicomPath").to_pylist() == table.column("DicomPath").to_pylist()
    assert back.column("ReferencedImageSequence").to_pylist() == \
        table.column("ReferencedImageSequence").to_pylist()


def _report_lines(stem, *outputs: str) -> list[str]:
    """The HTML report, a tag a line, with what differs between two runs of the same
    rows made the same: the output's names, the state's, the times."""
    text = open(f"{stem}.report.html", encoding="utf-8").read()
    for output in outputs:
        text = text.replace(output, "OUT")
    text = text.replace(f"{stem}.", "STEM.")
    text = re.sub(r"STEM\.state/gen-[0-9a-f-]+", "STATE", text)
    text = re.sub(r"generated [0-9: -]+UTC", "", text)
    text = re.sub(r'"(seconds|files_per_second)" data-value="[0-9.]+">[0-9.]+<', "", text)
    text = re.sub(r"<dd>[0-9.,]+ (s|files/s)</dd>", "", text)
    return text.replace("><", ">\n<").splitlines()


def test_nested_alone_counts_the_report_figures_shard_by_shard(tmp_path):
    """-o FOLDER/ --format nested alone: no step merges the table, the figures are
    counted per shard and merged; the report is the single-file run's."""
    flags = ("--format", "nested", "--rows-per-shard", "20", "--rows-per-part", "50")
    assert run(TEST_FILES, "-o", tmp_path / "one.csv", *flags) == 0
    assert run(TEST_FILES, "-o", f"{tmp_path / 'scan'}/", *flags) == 0
    single = _report_lines(tmp_path / "one", str(tmp_path / "one.nested.parquet"),
                           str(tmp_path / "one.csv"))
    parts = _report_lines(tmp_path / "scan", f"{tmp_path / 'scan'}/")
    at = parts.index("<dt>nested_parts</dt>")  # the one figure a single file has not
    count = math.ceil(summary_of(tmp_path / "scan")["rows"] / 50)
    assert parts[at + 1] == f"<dd>{count}</dd>" and count > 1
    del parts[at: at + 2]
    assert len(single) > 1000 and parts == single
    assert 'data-figure="series" data-value="0"' not in "".join(parts)


def test_reruns_give_the_same_parts_and_replace_old_ones(tmp_path):
    folder = tmp_path / "scan"
    flags = ("--format", "nested", "--rows-per-part", "4")
    assert run(CHARSET_FILES, "-o", f"{folder}/", *flags) == 0
    first = part_bytes(folder)
    rows = summary_of(folder)["rows"]
    assert len(first) == math.ceil(rows / 4) > 2
    # An incremental run reuses every row and writes the same bytes.
    assert run(CHARSET_FILES, "-o", f"{folder}/", *flags, "--incremental") == 0
    assert summary_of(folder)["files_reused"] == summary_of(folder)["files_matched"]
    assert part_bytes(folder) == first
    # Another part size: the old parts are gone, the rows are the same.
    assert run(CHARSET_FILES, "-o", folder, "--format", "nested",
               "--rows-per-part", "1000") == 0
    assert part_files(folder) == [part_name(0, 1)]
    old = pa.concat_tables(pq.read_table(folder.parent / "old" / name)
                           for name in _saved(first, folder.parent / "old"))
    assert pq.read_table(folder / part_name(0, 1)).equals(old)


def _saved(files: dict, folder) -> list[str]:
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return sorted(files)


def test_a_run_with_no_rows_writes_one_empty_part(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "notes.txt").write_text("not DICOM\n")
    assert run(source, "-o", f"{tmp_path / 'scan'}/", "--format", "nested") == 0
    assert part_files(tmp_path / "scan") == [part_name(0, 1)]
    assert pq.read_table(tmp_path / "scan" / part_name(0, 1)).num_rows == 0
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp_path / 'scan'}/*.parquet')"
                      ).fetchall() == [(0,)]


def usage_error(capsys, *args) -> str:
    capsys.readouterr()
    assert main([str(arg) for arg in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_folder_holding_other_files_is_refused(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "mine.parquet").write_bytes(b"someone else's table")
    line = usage_error(capsys, CHARSET_FILES, "-o", f"{folder}/", "--format", "nested")
    assert "holds files that are not parts of a nested dataset" in line
    assert str(folder / "mine.parquet") in line
    assert os.listdir(folder) == ["mine.parquet"]
    assert sorted(os.listdir(tmp_path)) == ["data"]  # nothing written beside it either
    file = tmp_path / "file"
    file.write_text("x")
    line = usage_error(capsys, CHARSET_FILES, "-o", f"{file}/", "--format", "nested")
    assert "is a file, not a folder" in line


def _row(number: int):
    """A row as the reading step stores it, with its DICOM JSON cell."""
    path = f"/archive/{number % 7}/file{number:05d}.dcm"
    document = json.dumps({"00100020": {"vr": "LO", "Value": [f"P{number}"]}})
    return Row(path, {PATH_COLUMN: path, "Patient ID (0010,0020)": f"P{number}",
                      JSON_COLUMN: document}, {"Patient ID (0010,0020)": "LO",
                                               JSON_COLUMN: None})


@pytest.mark.parametrize("shard_count", [1, 3, 8])
def test_any_sharding_gives_the_same_parts(tmp_path, shard_count):
    """Rows spread over shards at random (as bundles do) give parts holding the same
    rows: the path order cut every N rows, read from a slice of each shard."""
    numbers = list(range(3 * shard_format.ROW_GROUP_ROWS + 17))  # several row groups
    random.Random(shard_count).shuffle(numbers)
    shards = [shard_format.write_shard(str(tmp_path / f"rows-{n}.parquet"),
                                       [_row(number) for number in numbers[n::shard_count]])
              for n in range(shard_count)]
    plans = plan_parts(None, shards, 1000)
    everything = sorted(_row(number).path for number in numbers)
    assert [plan.number for plan in plans] == list(range(4))
    assert {plan.parts for plan in plans} == {4}
    for plan in plans:
        rows = sorted(row for path, size, start, stop in plan.slices
                      for row in read_slice(path, size, start, stop))
        assert [path for path, _ in rows] == everything[plan.number * 1000:][:1000]
        assert all(json.loads(text)["00100020"]["Value"] == [f"P{int(path[-9:-4])}"]
                   for path, text in rows)


def test_part_names_are_the_only_ones_replaced():
    assert PART_NAME.fullmatch(part_name(3, 12))
    for name in ("part-3-of-12.parquet", "part-00003-of-00012.parquet.partial",
                 "mine.parquet", "part-00003-of-00012.csv"):
        assert not PART_NAME.fullmatch(name)


# --------------------------------------------------------------------------------------
# Buckets: gs:// (gcp-storage-emulator) and s3:// (moto), on 127.0.0.1
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def buckets():
    with ss.loopback_only():
        gcs = ss.start_gcs_emulator(bucket=BUCKET)
        s3 = ss.start_moto_server(bucket=BUCKET)
        previous = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = gcs.endpoint
        storage.prepare_filesystems()
        try:
            yield {"gs": [], "s3": ss.s3_pipeline_args(s3.endpoint)}
        finally:
            ss.restore_env({"STORAGE_EMULATOR_HOST": previous})
            FileSystems.set_options(None)
            gcs.stop()
            s3.stop()


def bucket_files(prefix: str, args) -> dict:
    FileSystems.set_options(PipelineOptions(list(args)))
    found = {}
    for meta in FileSystems.match([prefix + "**"])[0].metadata_list:
        with FileSystems.open(meta.path) as stream:
            found[meta.path[len(prefix):]] = stream.read()
    return found


@pytest.fixture(scope="module")
def local_parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("local-parts")
    assert run(CHARSET_FILES, "-o", f"{root / 'scan'}/", "--format", "json,nested",
               "--rows-per-part", "5") == 0
    assert run(CHARSET_FILES, "-o", root / "one.csv", "--format", "json,nested") == 0
    return root


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_parts_in_a_bucket_equal_the_local_ones(scheme, buckets, local_parts, capsys):
    args = buckets[scheme]
    out = f"{scheme}://{BUCKET}/run-{uuid.uuid4().hex[:6]}/"
    assert run(CHARSET_FILES, "-o", out + "scan/", "--format", "json,nested",
               "--rows-per-part", "5", *args) == 0
    found = bucket_files(out, args)
    parts = {name[len("scan/"):]: data for name, data in found.items()
             if name.startswith("scan/")}
    assert parts == part_bytes(local_parts / "scan")
    assert found["scan.jsonl"] == (local_parts / "scan.jsonl").read_bytes()
    assert not [name for name in found if ".tmp-" in name or name.endswith(".lock")]
    # Another part size in the same folder: the old parts are deleted.
    assert run(CHARSET_FILES, "-o", out + "scan/", "--format", "nested",
               "--rows-per-part", "1000", *args) == 0
    assert [name for name in bucket_files(out, args) if name.startswith("scan/")] == \
        ["scan/" + part_name(0, 1)]
    # A single-file run to the bucket writes the local single files' bytes.
    assert run(CHARSET_FILES, "-o", out + "one.csv", "--format", "json,nested", *args) == 0
    found = bucket_files(out, args)
    for name in ("one.jsonl", "one.nested.parquet"):
        assert found[name] == (local_parts / name).read_bytes(), name
    # A bucket folder holding anything else is refused before any work.
    FileSystems.set_options(PipelineOptions(list(args)))
    with FileSystems.create(out + "theirs/table.parquet") as stream:
        stream.write(b"not ours")
    line = usage_error(capsys, CHARSET_FILES, "-o", out + "theirs/", "--format", "nested",
                       *args)
    assert "holds files that are not parts of a nested dataset" in line
    assert sorted(bucket_files(out + "theirs/", args)) == ["table.parquet"]


def test_a_whole_bucket_is_no_folder(buckets, capsys):
    line = usage_error(capsys, CHARSET_FILES, "-o", f"s3://{BUCKET}/", "--format", "nested",
                       *buckets["s3"])
    assert "is a whole bucket" in line

