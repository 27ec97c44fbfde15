"""Fuzzing: broken files never crash, hang or vanish.

* The mutation test writes 2,400 mutated copies of pydicom's test files (truncations,
  bit flips, corrupted lengths and VRs, zero runs, spliced blocks; fixed seed) into one
  folder and runs the real pipeline over it once: every case must come out as a row,
  an error of the vocabulary or a skip, and none may reach the time limit.
* Property tests (hypothesis) drive one function, ``read_file`` (bytes in, a row or a
  classified error or a skip out), with any byte string, DICM-prefixed garbage and
  mutated real headers. Every reader of the product belongs in ``READERS``: the pydicom
  path alone, and the lean header reader with its fallback (the default).
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import tempfile

import pyarrow as pa
import pytest
from apache_beam.io.filesystem import FileMetadata
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.mutations import mutate, source_files, write_cases
from transforms.reading.cells import bound_row
from transforms.output.columns import Column
from transforms.reading.errors import ERROR_TYPES, ErrorRecord
from transforms.common.tags import ARCHIVES, ERRORS, READER_COUNTS, SKIPPED
from transforms.reading.extract import ExtractHeaders
from transforms.common.rows import PATH_COLUMN, Row
from transforms.reading.flatten import FlattenSettings
from transforms.output.tables import column_vrs
from transforms.output.types import ColumnConverter, arrow_schema

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom, on garbage
CASES = 2400
SEED = 12
SETTINGS = FlattenSettings(include_private=True)

# ---------------------------------------------------------------------------
# The mutation test: one pipeline run over every case


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-cases")
    made = write_cases(str(folder), CASES, SEED)
    out = tmp_path_factory.mktemp("fuzz-out") / "fuzz.csv"
    command = [sys.executable, "-m", "beam_pipeline", str(folder), "-o", str(out), "--quiet",
               "--include-private", "--format", "csv,parquet", "--file-timeout=30"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return made, out


def _names(path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as stream:
        return [row["DicomPath"].rsplit("/", 1)[1] for row in csv.DictReader(stream)]


def test_every_mutated_file_is_a_row_an_error_or_a_skip(fuzzed):
    made, out = fuzzed
    stem = str(out)[: -len(".csv")]
    rows, skipped = _names(out), _names(stem + ".skipped.csv")
    with open(stem + ".errors.csv", newline="", encoding="utf-8") as stream:
        errors = list(csv.DictReader(stream))
    error_names = [e["DicomPath"].rsplit("/", 1)[1] for e in errors]
    everything = rows + error_names + skipped
    assert sorted(everything) == sorted(made)  # each case exactly once
    summary = json.load(open(stem + ".summary.json"))
    assert summary["accounted_for"] is True and summary["files_matched"] == CASES
    kinds = {e["ErrorType"] for e in errors}
    assert kinds <= set(ERROR_TYPES), kinds
    assert "Timeout" not in kinds  # none hangs
    assert all(e["Message"] and e["Exception"] for e in errors)
    # The mix shows the mutations bite: many rows, many errors, a few skips.
    assert len(rows) > CASES // 5 and len(errors) > CASES // 5 and skipped


# ---------------------------------------------------------------------------
# Properties: bytes -> a row, a classified error or a skip


def _reader(lean: bool):
    """Extraction as the pipeline runs it: ``lean`` reads with the lean header reader
    first (the product's default), else with the pydicom path only."""
    fn = ExtractHeaders(SETTINGS, lean=lean)
    fn.setup()

    def read(path: str):
        outputs = [output for output in fn.process(FileMetadata(path, os.path.getsize(path), 0))
                   if getattr(output, "tag", None) != READER_COUNTS]
        assert len(outputs) == 1
        return outputs[0]

    return read


READERS = {"pydicom": _reader(lean=False), "lean": _reader(lean=True)}
_SCRATCH = tempfile.mkdtemp(prefix="hostile-fuzz-")


def read_file(reader: str, data: bytes, name: str):
    """One file's outcome: ``("row", Row)``, ``("error", ErrorRecord)`` or
    ``("skip", reason)``. Any other exception fails the property."""
    path = os.path.join(_SCRATCH, name)
    with open(path, "wb") as out:
        out.write(data)
    outcome = READERS[reader](path)
    if isinstance(outcome, Row):
        return "row", outcome
    record = outcome.value
    if outcome.tag == ERRORS:
        return "error", ErrorRecord(*record[1:])
    if outcome.tag == ARCHIVES:  # bytes that open like an archive go to the archive steps
        return "archive", record
    assert outcome.tag == SKIPPED
    return "skip", record[1]


def check_outcome(kind, value, name: str) -> None:
    if kind == "error":
        assert value.type in ERROR_TYPES, value
        assert value.message and "\n" not in value.message
        assert value.exception
        return
    if kind == "archive":
        return
    if kind == "skip":
        assert value and not name.lower().endswith(".dcm")  # a .dcm is never skipped
        return
    row = value
    assert row.values[PATH_COLUMN].endswith(name) and set(row.vrs) == set(row.values)
    for column, text in row.values.items():
        assert isinstance(column, str) and isinstance(text, str) and text
        column.encode("utf-8")  # strict: a lone surrogate would fail every writer
        text.encode("utf-8")
    bounded, _ = bound_row(row, SETTINGS.max_values, SETTINGS.max_cell_chars)
    assert max(len(text) for text in bounded.values.values()) <= 32_767
    columns = [Column(column, frozenset({vr})) for column, vr in bounded.vrs.items()]
    schema, vrs = arrow_schema(columns), column_vrs(columns)
    # As the table writer types a row group (transforms/output/tables.py).
    arrays = [ColumnConverter(field.type, vrs[field.name]).convert([bounded.values.get(field.name)])[0]
              for field in schema]
    pa.Table.from_arrays(arrays, schema=schema)


# FUZZ_EXAMPLES=5000 for a longer hunt than CI's.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 300)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SOURCES = [path for path in source_files() if os.path.getsize(path) <= 64 * 1024]
_CONTENTS: dict = {}


def _content(path: str) -> bytes:
    if path not in _CONTENTS:
        _CONTENTS[path] = open(path, "rb").read()
    return _CONTENTS[path]


@pytest.mark.parametrize("reader", sorted(READERS))
@FUZZ
@given(data=st.binary(max_size=4096), named=st.booleans())
def test_any_bytes(reader, data, named):
    name = "any.dcm" if named else "any"
    check_outcome(*read_file(reader, data, name), name)


@pytest.mark.parametrize("reader", sorted(READERS))
@FUZZ
@given(body=st.binary(max_size=4096))
def test_dicm_prefixed_garbage(reader, body):
    check_outcome(*read_file(reader, b"\0" * 128 + b"DICM" + body, "dicm.dcm"), "dicm.dcm")


@pytest.mark.parametrize("reader", sorted(READERS))
@FUZZ
@given(
    source=st.sampled_from(SOURCES),
    edits=st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=8)), max_size=6),
    cut=st.one_of(st.none(), st.floats(0, 1)),
    named=st.booleans(),
)
def test_mutated_real_headers(reader, source, edits, cut, named):
    data = bytearray(_content(source))
    header = min(len(data), 4096)
    for where, replacement in edits:
        position = int(where * (header - 1))
        data[position:position + len(replacement)] = replacement
    if cut is not None:
        data = data[: int(cut * len(data))]
    name = "mutated.dcm" if named else "mutated"
    check_outcome(*read_file(reader, bytes(data), name), name)


@pytest.mark.parametrize("reader", sorted(READERS))
@FUZZ
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(
    ["truncate", "bitflip", "length", "vr", "zeros", "splice"]))
def test_structured_mutations(reader, seed, kind):
    rng = random.Random(seed)
    source = rng.choice(SOURCES)
    data = mutate(_content(source), kind, rng)
    check_outcome(*read_file(reader, data, "structured.dcm"), "structured.dcm")


# The flattener alone: any raw elements pydicom could hand it, any bytes in them.
_TAGS = [0x00080005, 0x00080008, 0x00080016, 0x00080020, 0x00080030, 0x00081140,
         0x00100010, 0x00100020, 0x00180050, 0x00200032, 0x00280010, 0x00280030,
         0x00280103, 0x00281050, 0x00400275, 0x00189410, 0x00291010, 0x00290010,
         0x0040A160, 0x30060050, 0x00020010, 0x7FE00010, 0x60003000, 0x00091001]
_VRS = [None, "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT",
        "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV",
        "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"]


@FUZZ
@given(
    elements=st.lists(st.tuples(st.sampled_from(_TAGS), st.sampled_from(_VRS),
                                st.binary(max_size=96)), max_size=16),
    implicit=st.booleans(),
    little=st.booleans(),
    private=st.booleans(),
)
def test_flatten_gives_a_row_for_any_raw_elements(elements, implicit, little, private):
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    from transforms.reading.flatten import flatten

    # As pydicom's read_dataset builds one: a dict of raw elements, nothing converted.
    dataset = Dataset({
        Tag(tag): RawDataElement(Tag(tag), None if implicit else vr, len(value), value,
                                 0, implicit, little)
        for tag, vr, value in elements
    })
    dataset.set_original_encoding(implicit, little)
    row, _ = flatten(dataset, "raw.dcm", FlattenSettings(include_private=private))
    check_outcome("row", row, "raw.dcm")
