"""The CSV and JSON lines written in parts (transforms/output/table_parts.py), on the rows
of real files: whatever the number of parts and the sharding, the joined files are the
single merge's bytes and the report's figures its figures; placing the parts in any
order, twice, or without the kernel's copy gives the same file."""

from __future__ import annotations

import errno
import json
import os
import random

import pytest

from beam_pipeline.cli import main
from tests.conftest import CHARSET_FILES, TEST_FILES
from tests.test_tables import columns_of
from transforms.common.atomic_files import place, reserve
from transforms.output import shard_format, table_parts
from transforms.output.table_stats import TableStats
from transforms.output.tables import TableFiles, merge_shards


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """One CLI run over pydicom's test and charset files: its CSV, JSON lines, summary
    and row shards (the state's), and those rows spread over four shards at random with
    row groups of 5 rows, so that parts cut across row groups."""
    folder = tmp_path_factory.mktemp("run")
    output = folder / "scan.csv"
    assert main([TEST_FILES, CHARSET_FILES, "-o", str(output), "--format", "csv,json",
                 "--quiet"]) == 0
    state_shards = sorted(str(path) for path in folder.glob("scan.state/gen-*/rows-*.parquet"))
    rows = [row for path in state_shards for row in shard_format.read_rows(path)]
    assert len(rows) > 100
    random.Random(7).shuffle(rows)
    original = shard_format.ROW_GROUP_ROWS
    shard_format.ROW_GROUP_ROWS = 5
    try:
        shards = [shard_format.write_shard(str(folder / f"rows-{n}.parquet"),
                                           sorted(rows[n::4], key=lambda row: row.path))
                  for n in range(4)]
    finally:
        shard_format.ROW_GROUP_ROWS = original
    assert all(shard_format.open_shard(open(shard.path, "rb"), shard.path)
               .metadata.num_row_groups > 1 for shard in shards)
    summary = json.loads((folder / "scan.summary.json").read_text())
    return folder, shards, summary


def _write_in_parts(shards, folder, rows_per_part, monkeypatch, reverse=False):
    monkeypatch.setattr(table_parts, "part_rows", lambda total: rows_per_part)
    files = TableFiles(str(folder / "scan.csv"), None, jsonl=str(folder / "scan.jsonl"))
    columns = columns_of(shards)
    plan = table_parts.plan_parts(None, shards)
    written = [table_parts.write_part(part, columns, files, str(folder), False, True)
               for part in reversed(plan)]
    joined = table_parts.plan_join(written, files, str(folder))
    placements = joined["placements"]
    for placement in (reversed(placements) if reverse else placements):
        table_parts.place_part(placement)
    if placements:  # one part is its file: nothing to place
        table_parts.place_part(placements[-1])  # repeated: the same bytes again
    again = table_parts.plan_join(written, files, str(folder))  # a repeated join
    assert again["placements"] == placements
    figures = table_parts.joined_figures(joined, placements)
    return len(plan), figures


@pytest.mark.parametrize("rows_per_part", [7, 50, 100_000])
def test_parts_join_into_the_single_merges_bytes(pipeline_run, tmp_path, monkeypatch,
                                                 rows_per_part):
    run_folder, shards, _ = pipeline_run
    parts, figures = _write_in_parts(shards, tmp_path, rows_per_part, monkeypatch,
                                     reverse=rows_per_part == 7)
    rows = sum(shard.rows for shard in shards)
    assert parts == max(1, -(-rows // rows_per_part))
    renames = figures.pop("renames")
    assert figures["rows"] == figures["json_rows"] == rows
    joined = {os.path.splitext(final)[1]: temp for temp, final in renames.items()}
    for suffix in (".csv", ".jsonl"):
        with open(joined[suffix], "rb") as mine, open(run_folder / f"scan{suffix}", "rb") as run:
            assert mine.read() == run.read(), suffix
    # The report's figures: those of one merge over the same shards.
    single = TableStats()
    merge_shards(shards, columns_of(shards), TableFiles(None, None), stats=single)
    single.source = str(tmp_path / "scan.csv")
    assert figures[table_parts.TABLE_STATS] == single.as_dict()


def test_placing_without_the_kernels_copy_gives_the_same_file(pipeline_run, tmp_path,
                                                              monkeypatch):
    run_folder, _, _ = pipeline_run
    source = run_folder / "scan.jsonl"
    data = source.read_bytes()
    half = len(data) // 2
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(data[:half])
    second.write_bytes(data[half:])

    def refused(*args, **kwargs):
        raise OSError(errno.EXDEV, "cross-device")

    for name, patch in (("kernel", None), ("streamed", refused)):
        if patch is not None:
            monkeypatch.setattr(os, "copy_file_range", patch)
        target = str(tmp_path / name)
        reserve(target, len(data))
        assert place(str(second), target, half) == len(data) - half
        assert place(str(first), target, 0) == half
        assert open(target, "rb").read() == data, name


def test_a_part_over_the_memory_budget_merges_its_slices_in_runs(pipeline_run, tmp_path,
                                                                  monkeypatch):
    """Slices carry no columns: runs of slices read them from their shards, and the
    part's text is the same as in one pass."""
    from transforms.output import shard_merge

    _, shards, _ = pipeline_run
    monkeypatch.setattr(table_parts, "part_rows", lambda total: 60)
    part = table_parts.plan_parts(None, shards)[1]
    assert len(part.slices) == 4 and all(piece.columns is None for piece in part.slices)
    texts = []
    costs = sorted(map(shard_merge.reader_cost, part.slices))
    for name, budget in (("one-pass", shard_merge.MEMORY_BUDGET),
                         ("runs", costs[-1] + costs[-2])):
        assert len(shard_merge.groups_within(part.slices, budget)) == \
            (1 if name == "one-pass" else 2)
        folder = tmp_path / name
        folder.mkdir()
        files = TableFiles(str(folder / "part.csv"), None, jsonl=str(folder / "part.jsonl"))
        figures = merge_shards(part.slices, columns_of(shards), files, budget=budget,
                               temp_dir=str(folder), header=False)
        assert figures["rows"] == 60
        assert sorted(os.listdir(folder)) == ["part.csv", "part.jsonl"]  # runs deleted
        texts.append((open(files.csv, "rb").read(), open(files.jsonl, "rb").read()))
    assert texts[0] == texts[1]


def test_missing_parts_fail_the_join(pipeline_run, tmp_path, monkeypatch):
    _, shards, _ = pipeline_run
    monkeypatch.setattr(table_parts, "part_rows", lambda total: 50)
    files = TableFiles(str(tmp_path / "scan.csv"), None)
    plan = table_parts.plan_parts(None, shards)
    written = [table_parts.write_part(part, columns_of(shards), files, str(tmp_path), False, True)
               for part in plan[1:]]
    with pytest.raises(RuntimeError, match="table parts missing"):
        table_parts.plan_join(written, files, str(tmp_path))


def test_repeated_bundles_write_the_same_parts_in_a_pipeline(pipeline_run, tmp_path,
                                                             monkeypatch):
    """``WriteTextParts`` in a real pipeline with every bundle run twice and parts of 9
    rows: the renamed files are the CLI's bytes."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.output.columns import ComputeColumns
    from transforms.output.tables import finalize_step

    run_folder, shards, _ = pipeline_run
    monkeypatch.setattr(table_parts, "part_rows", lambda total: 9)
    final = TableFiles(str(tmp_path / "scan.csv"), None, jsonl=str(tmp_path / "scan.jsonl"))
    temp = tmp_path / "temp"
    temp.mkdir()
    with beam.Pipeline(options=PipelineOptions(["--direct_runner_bundle_repeat=1"])) as p:
        rows = p | beam.Create(shards)
        columns = rows | ComputeColumns()
        _ = (rows | table_parts.WriteTextParts(final, str(temp), columns)
             | beam.Map(finalize_step))
    for suffix in (".csv", ".jsonl"):
        assert (tmp_path / f"scan{suffix}").read_bytes() == \
            (run_folder / f"scan{suffix}").read_bytes(), suffix
