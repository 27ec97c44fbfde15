"""State: what a run keeps next to its output so the next run can reuse it.

Layout for ``-o scan.csv``::

    scan.state/CURRENT                JSON: the generation the outputs were built from
    scan.state/gen-<runid>/           one run's generation
        settings.json                 the fingerprint its rows depend on
        rows-<uuid>.parquet           row shards (shard_format.py)
        outcomes-<uuid>.parquet       errors and skips with size and mtime
        GENERATION.json               written at commit: the shards and parts it holds

Every file is data with a format name and version (JSON or Parquet, never pickle). A
run reuses:

* the generation ``CURRENT`` names, with ``--incremental``: only the shards and parts
  its ``GENERATION.json`` lists (files a retried bundle left beside them are never read);
* generations of interrupted runs (never committed: no ``GENERATION.json``; a committed
  generation ``CURRENT`` does not name is never reused): every shard and part whose
  footer checks out (a shard is complete once its footer is written). A retried bundle
  may have left two shards holding one file; the reuse join takes one row per file.

Only generations made with the same fingerprint are reused: flatten settings, the state
and shard format versions, the hash of the code that turns a file into a row and the
pydicom version (column names come from its dictionary). Anything unreadable, foreign
or of another version becomes a ``state_note`` in the summary and, for the generation
``CURRENT`` names, a full re-extraction; it never stops the run.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.common.atomic_files import write_atomically
from transforms.common.code_digest import code_digest
from transforms.output import shard_format

STATE_FORMAT = "dicom-meta-extract/state"
STATE_VERSION = 2  # 1 was the pickled state
OUTCOMES_FORMAT = "dicom-meta-extract/outcomes"
CURRENT = "CURRENT"
SETTINGS = "settings.json"
GENERATION = "GENERATION.json"
ROWS_PATTERN = "rows-*" + shard_format.SUFFIX
OUTCOMES_PATTERN = "outcomes-*.parquet"
# The modules whose code decides a row's text: rows kept by other code are stale.
ROW_CODE_MODULES = (
    "transforms.reading.flatten", "transforms.reading.naming", "transforms.reading.values",
    "transforms.common.pydicom_internals", "transforms.common.private_tags",
    "transforms.reading.extract",
    "transforms.reading.header_reader", "transforms.reading.header_syntax",
    "transforms.reading.header_file", "transforms.reading.header_cells",
    "transforms.reading.cells", "transforms.common.paths",
    "transforms.inputs.archive_members", "transforms.reading.archives",
    "transforms.common.rows", "transforms.reading.dicom_json",
    "transforms.reading.json_values", "transforms.reading.json_reader",
    # DICOMweb instances' rows (DS/IS text, left-out values), reused by web_reuse.py;
    # their DicomPath is built there too, so a changed URL reads the series again anyway.
    "transforms.reading.dicomweb_rows",
)


class StateError(Exception):
    """A state file that is missing, corrupt, foreign or of another version."""


# ---------------------------------------------------------------------------
# Small JSON records


def write_json(path: str, record: dict) -> None:
    """Write under a name unique to this attempt, then rename: readers see all or nothing."""
    write_atomically(path, json.dumps(record, indent=2, default=str).encode("utf-8"))


def read_json(path: str, kind: str) -> dict:
    """A record written by ``write_json`` with ``{"format": STATE_FORMAT, "kind": kind}``."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            record = json.loads(stream.read().decode("utf-8"))
    except Exception as exc:  # pylint: disable=broad-except  # missing, unreadable, not JSON
        raise StateError(f"{FileSystems.split(path)[1]}: unreadable ({type(exc).__name__})") from exc
    if not isinstance(record, dict) or record.get("format") != STATE_FORMAT:
        raise StateError(f"{FileSystems.split(path)[1]}: not {STATE_FORMAT} data")
    if record.get("version") != STATE_VERSION or record.get("kind") != kind:
        raise StateError(f"{FileSystems.split(path)[1]}: {record.get('kind')} version "
                         f"{record.get('version')!r}, this code reads {STATE_VERSION}")
    return record


def record(kind: str, **content) -> dict:
    return {"format": STATE_FORMAT, "version": STATE_VERSION, "kind": kind, **content}


# ---------------------------------------------------------------------------
# Outcome parts: (path, size, mtime, kind, details) of errors and skips, as Parquet

_OUTCOME_SCHEMA = pa.schema([
    pa.field("DicomPath", pa.string(), nullable=False),
    pa.field(shard_format.SIZE_COLUMN, pa.int64()),
    pa.field(shard_format.MTIME_COLUMN, pa.float64()),
    pa.field("kind", pa.string()),  # "error" or "skipped"
    pa.field("details", pa.list_(pa.string())),  # the record without its path
], metadata={b"dicom_meta.format": OUTCOMES_FORMAT.encode(),
             b"dicom_meta.format_version": str(STATE_VERSION).encode()})


def write_outcomes(path: str, entries) -> None:
    columns = list(zip(*entries)) if entries else [[]] * 5
    paths, sizes, mtimes, kinds, details = columns
    table = pa.Table.from_arrays(
        [pa.array(list(paths), pa.string()), pa.array(list(sizes), pa.int64()),
         pa.array(list(mtimes), pa.float64()), pa.array(list(kinds), pa.string()),
         pa.array([list(map(str, item)) for item in details], pa.list_(pa.string()))],
        schema=_OUTCOME_SCHEMA,
    )
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        pq.write_table(table, out, compression="zstd")


def _check_outcomes(parquet: pq.ParquetFile, path: str) -> None:
    metadata = parquet.metadata.metadata or {}
    if (metadata.get(b"dicom_meta.format") != OUTCOMES_FORMAT.encode()
            or metadata.get(b"dicom_meta.format_version") != str(STATE_VERSION).encode()):
        raise shard_format.ShardFormatError(f"{path}: not {OUTCOMES_FORMAT} version {STATE_VERSION}")


def _outcomes_file(stream, path: str) -> pq.ParquetFile:
    """The outcome part open on ``stream``; ``ShardFormatError`` if it is not one."""
    try:
        parquet = pq.ParquetFile(stream)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise shard_format.ShardFormatError(f"{path}: not Parquet") from exc
    _check_outcomes(parquet, path)
    return parquet


def read_outcomes(path: str):
    """``(path, size, mtime, kind, details tuple)`` of every entry of an outcome part."""
    with shard_format.open_stream(path) as stream:
        table = _outcomes_file(stream, path).read()
    for path_, size, mtime, kind, details in zip(*(table.column(i).to_pylist() for i in range(5))):
        yield path_, size, mtime, kind, tuple(details)


def check_file(path: str) -> None:
    """Raise ``ShardFormatError`` unless ``path`` is a complete shard or outcome part."""
    if FileSystems.split(path)[1].startswith("rows-"):
        shard_format.read_info(path)
        return
    with shard_format.open_stream(path) as stream:
        _outcomes_file(stream, path)


# ---------------------------------------------------------------------------
# At launch: this run's generation and what it may reuse


def code_fingerprint() -> str:
    return code_digest(ROW_CODE_MODULES)[:16]


def fingerprint(settings, content: dict | None = None, read_archives: bool = True) -> dict:
    """What stored rows depend on; ``content``: the tag selection and de-identification
    settings, key fingerprint included (``transforms.content.settings.ContentSettings``);
    ``read_archives``: whether archives were read member by member or skipped."""
    return {
        "state_version": STATE_VERSION,
        "shard_format": f"{shard_format.FORMAT_NAME} {shard_format.FORMAT_VERSION}",
        "code": code_fingerprint(),
        "pydicom": pydicom.__version__,
        "include_private": settings.include_private,
        "max_sequence_items": settings.max_sequence_items,
        "max_binary_bytes": settings.max_binary_bytes,
        "max_values": settings.max_values,
        "max_cell_chars": settings.max_cell_chars,
        "dicom_json": getattr(settings, "dicom_json", False),
        "read_archives": read_archives,
        **(content or {}),
    }


def state_dir_for(table: str) -> str:
    stem = table[: -len(".csv")] if table.lower().endswith(".csv") else table
    return stem + ".state"


def run_id_of(temp_dir: str) -> str:
    """The run's id, taken from its temp dir ``.<stem>.tmp-<runid>``."""
    name = FileSystems.split(temp_dir.rstrip("/"))[1]
    if ".tmp-" in name:
        return name.rsplit(".tmp-", 1)[1]
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class RunState:
    """Where this run keeps its state, and which earlier files it may reuse."""

    state_dir: str
    generation: str  # this run's generation directory
    incremental: bool
    previous: str | None  # the generation CURRENT names, when this run reuses it
    sources: tuple  # (rank, path) of shards and outcome parts: 0 = previous, 1.. = interrupted
    note: str

    @property
    def reusing(self) -> bool:
        return bool(self.sources)


def _match(pattern: str) -> list[str]:
    return sorted(meta.path for meta in FileSystems.match([pattern])[0].metadata_list)


def _name(path: str) -> str:
    return FileSystems.split(path.rstrip("/"))[1]


def _generation_files(directory: str, committed: bool) -> list[str]:
    if committed:
        listed = read_json(FileSystems.join(directory, GENERATION), "generation")
        names = list(listed.get("row_shards", [])) + list(listed.get("outcome_parts", []))
        return [FileSystems.join(directory, name) for name in names]
    return (_match(FileSystems.join(directory, ROWS_PATTERN))
            + _match(FileSystems.join(directory, OUTCOMES_PATTERN)))


def _valid(paths: list[str]) -> dict:
    """path -> None if usable, else the reason; footers read in parallel."""
    def check(path):
        try:
            check_file(path)
            return None
        except Exception as exc:  # pylint: disable=broad-except
            return f"{type(exc).__name__}: {exc}"

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        return dict(zip(paths, pool.map(check, paths)))


def prepare_state(table: str, temp_dir: str, settings, incremental: bool,
                  content: dict | None = None, reusable: bool = True,
                  read_archives: bool = True) -> RunState:
    """At launch: create this run's generation and list what earlier runs left to reuse.

    ``reusable=False`` (rows whose DicomPath is a keyed pseudonym, which cannot be matched
    to their files again): nothing earlier is reused."""
    state_dir = state_dir_for(table)
    generation = FileSystems.join(state_dir, f"gen-{run_id_of(temp_dir)}")
    wanted = json.loads(json.dumps(fingerprint(settings, content, read_archives)))  # as read back
    notes: list[str] = []
    current_name = None
    current_path = FileSystems.join(state_dir, CURRENT)
    if FileSystems.exists(current_path):
        try:
            current_name = read_json(current_path, "current")["generation"]
        except (StateError, KeyError, TypeError) as exc:
            notes.append(f"{CURRENT}: {exc if isinstance(exc, StateError) else 'no generation'}; "
                         "not reused")
    others = sorted({FileSystems.split(path)[0] for path in
                     _match(FileSystems.join(state_dir, "gen-*", SETTINGS))}, reverse=True)
    write_json(FileSystems.join(generation, SETTINGS), record("settings", fingerprint=wanted))

    sources, previous = [], None
    if not reusable:
        notes.append("pseudonymized paths cannot be matched to files: every file is extracted")
        others = []
    for rank, directory in enumerate(others, start=1):
        name = _name(directory)
        is_current = name == current_name
        if is_current and not incremental:
            continue
        if not is_current and FileSystems.exists(FileSystems.join(directory, GENERATION)):
            continue  # committed once, no longer current: left for cleanup, never resumed
        try:
            found = read_json(FileSystems.join(directory, SETTINGS), "settings").get("fingerprint")
            if found != wanted:
                notes.append(f"{name}: made with other settings, code or pydicom, not reused")
                continue
            paths = _generation_files(directory, committed=is_current)
        except StateError as exc:
            notes.append(f"{name}: {exc}; not reused")
            continue
        problems = {path: reason for path, reason in _valid(paths).items() if reason}
        if is_current and problems:
            path, reason = next(iter(sorted(problems.items())))
            notes.append(f"{name}: {len(problems)} unusable state file(s), e.g. {reason}; "
                         "not reused")
            continue
        usable = [path for path in paths if path not in problems]
        if is_current:
            previous = directory
            sources.extend((0, path) for path in usable)
        else:
            sources.extend((rank, path) for path in usable)
    if incremental and previous is None:
        notes.append("no usable previous output: every file is extracted")
    return RunState(state_dir, generation, incremental, previous, tuple(sorted(sources)),
                    "; ".join(notes))


# ---------------------------------------------------------------------------
# At commit: record what this generation holds, then point CURRENT at it


def commit_state(summary: dict, state: RunState, shards, parts, after=()) -> dict:
    """Write ``GENERATION.json`` (only the files that reached this step) and ``CURRENT``.

    Both are whole-file replacements: a repeated commit writes the same again.
    ``after``: outputs of steps that must be done first (the HTML report)."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    write_json(FileSystems.join(state.generation, GENERATION), record(
        "generation",
        committed=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        summary=summary,
        row_shards=sorted(_name(shard.path) for shard in shards),
        outcome_parts=sorted(_name(path) for path in parts),
    ))
    write_json(FileSystems.join(state.state_dir, CURRENT),
               record("current", generation=_name(state.generation)))
    return summary
