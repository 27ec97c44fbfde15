"""``--column-names keyword`` (issue 20): column names every warehouse takes as they are.

Names are checked against BigQuery's documented rules (letters, digits and underscores,
starting with a letter or an underscore, at most 300 characters, unique ignoring case);
real runs over pydicom's test files are loaded into DuckDB."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter

import duckdb
import pyarrow.parquet as pq
import pytest
from pydicom.datadict import tag_for_keyword

from beam_pipeline.cli import main
from tests.conftest import TEST_FILES
from transforms.output.keyword_names import (
    MAX_NAME_CHARS, keyword_name, keyword_names, output_names,
)
from transforms.output.table_stats import scan_csv, scan_parquet

BIGQUERY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SEED_TAG = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)(?: \[\d+\])?(?: - | #items$|$)")


def seed_tags(seed: str) -> list[int]:
    return [int(group + element, 16) for group, element in SEED_TAG.findall(seed)]


def keyword_tags(name: str) -> list[int]:
    """The tag path a keyword name stands for, read back from the name alone."""
    tags = []
    for level in name.split("__"):
        match = re.match(r"(?:Tag|PrivateCreator|Private)_([0-9A-F]{8})", level)
        if match:
            tags.append(int(match.group(1), 16))
        else:
            tags.append(tag_for_keyword(re.sub(r"(_\d+)?(_items)?$", "", level)))
    return tags


def assert_bigquery_names(names: list[str]) -> None:
    for name in names:
        assert BIGQUERY_NAME.fullmatch(name) and len(name) <= MAX_NAME_CHARS, name
    assert len({name.lower() for name in names}) == len(names)


def run(output, *flags, inputs=(TEST_FILES,)) -> dict:
    assert main([*map(str, inputs), "-o", str(output), "--quiet", "--include-private",
                 "--format", "csv,parquet", *flags]) == 0
    with open(str(output)[: -len(".csv")] + ".summary.json", encoding="utf-8") as stream:
        return json.load(stream)


def read_csv(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


@pytest.fixture(scope="module")
def seed_and_keyword(tmp_path_factory):
    """The same files written with seed names and, every bundle run twice, keyword names."""
    folder = tmp_path_factory.mktemp("naming")
    run(folder / "seed.csv")
    summary = run(folder / "keyword.csv", "--column-names", "keyword",
                  "--direct_runner_bundle_repeat=1")
    return folder, summary


def test_documented_examples():
    expected = {
        "DicomPath": "DicomPath",
        "Patient's Name (0010,0010)": "PatientName",
        "Private Creator (0029,0010)": "PrivateCreator_00290010",
        "[SIEMENS CSA HEADER] CSA Image Header Info (0029,1010)":
            "Private_00291010_SIEMENS_CSA_HEADER",
        "[Unknown Creator] (0029,1010)": "Private_00291010",
        "Group Length (0008,0000)": "Tag_00080000",
        "Referenced Image Sequence (0008,1140) - Referenced SOP Instance UID (0008,1155)":
            "ReferencedImageSequence__ReferencedSOPInstanceUID",
        "Referenced Image Sequence (0008,1140) [12] - Referenced SOP Instance UID (0008,1155)":
            "ReferencedImageSequence_12__ReferencedSOPInstanceUID",
        "Referenced Image Sequence (0008,1140) #items": "ReferencedImageSequence_items",
        "[ACME 3.0 (beta), v2] Dose (0019,1001) [2] - Patient ID (0010,0020)":
            "Private_00191001_ACME_3_0_beta_v2_2__PatientID",
    }
    assert {seed: keyword_name(seed) for seed in expected} == expected
    assert output_names(list(expected), "seed") == list(expected)


def test_collisions_and_long_names_get_a_stable_hash():
    # Two creators that differ only in punctuation and case, at the same tag.
    first, second = "[ACME-1] (0019,1001)", "[acme 1] (0019,1001)"
    names = keyword_names([first, second])
    assert names[0] != names[1] and names[0].startswith("Private_00191001_ACME_1_")
    assert keyword_names([second, first]) == names[::-1]  # not order-dependent
    deep = " - ".join(["Referenced Image Sequence (0008,1140) [2]"] * 40)
    [long_name] = keyword_names([deep + " - Modality (0008,0060)"])
    assert len(long_name) == MAX_NAME_CHARS and long_name.startswith("ReferencedImageSequence_2__")
    assert_bigquery_names(names + [long_name])


def test_every_column_of_pydicoms_files_is_valid_and_keeps_its_tag_path(seed_and_keyword):
    folder, _ = seed_and_keyword
    seeds = read_csv(folder / "seed.csv")[0]
    names = keyword_names(seeds)
    assert len(seeds) > 1000 and any(" [2] - " in seed for seed in seeds)
    assert any("[Unknown Creator]" in seed for seed in seeds)
    assert_bigquery_names(names)
    for seed, name in zip(seeds[1:], names[1:]):
        assert keyword_tags(name) == seed_tags(seed), (seed, name)


def test_tables_are_the_seed_tables_renamed(seed_and_keyword):
    folder, summary = seed_and_keyword
    seed_rows, keyword_rows = read_csv(folder / "seed.csv"), read_csv(folder / "keyword.csv")
    assert keyword_rows[0] == keyword_names(seed_rows[0])
    assert keyword_rows[1:] == seed_rows[1:]
    seed_table = pq.read_table(folder / "seed.parquet")
    keyword_table = pq.read_table(folder / "keyword.parquet")
    assert keyword_table.column_names == keyword_rows[0]
    assert keyword_table.rename_columns(seed_table.column_names).equals(seed_table)
    assert [field.metadata for field in keyword_table.schema] == \
        [field.metadata for field in seed_table.schema]
    assert summary["accounted_for"] and summary["rows"] == len(seed_rows) - 1


def test_duckdb_reads_the_keyword_parquet(seed_and_keyword):
    folder, _ = seed_and_keyword
    seed_rows = read_csv(folder / "seed.csv")
    modality = seed_rows[0].index("Modality (0008,0060)")
    expected = Counter(row[modality] or None for row in seed_rows[1:])
    path = str(folder / "keyword.parquet")
    got = duckdb.sql(
        f"SELECT Modality, count(*) FROM read_parquet('{path}') GROUP BY Modality"
    ).fetchall()
    assert dict(got) == dict(expected)
    # Nested and private columns are plain identifiers: no quoting needed.
    [(count,)] = duckdb.sql(
        "SELECT count(ReferencedImageSequence__ReferencedSOPInstanceUID) "
        f"FROM read_parquet('{path}')").fetchall()
    column = seed_rows[0].index(
        "Referenced Image Sequence (0008,1140) - Referenced SOP Instance UID (0008,1155)")
    assert count == sum(1 for row in seed_rows[1:] if row[column]) > 0


def test_report_figures_find_keyword_columns(seed_and_keyword):
    folder, _ = seed_and_keyword
    seed = scan_csv(str(folder / "seed.csv")).as_dict()
    for stats in (scan_csv(str(folder / "keyword.csv")), scan_parquet(str(folder / "keyword.parquet"))):
        figures = stats.as_dict()
        assert figures["distributions"] == seed["distributions"]
        assert figures["distinct"] == seed["distinct"]
        assert figures["distributions"]["modality"]["counts"]
