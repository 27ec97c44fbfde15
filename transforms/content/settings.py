"""What goes into the table: the run's tag selection and de-identification settings, and
the Row step that applies them inside extraction.

Lifecycle of the values: the flatten walker never converts an unselected element
(``transforms/content/selection.py``); ``RowContent.apply`` then de-identifies the row right
after flattening, before it is yielded, so shards, incremental state and every report
only ever hold de-identified values. The settings (and the key's fingerprint, never the
key) go into the state's settings fingerprint, so rows made with other settings or
another key are never reused, and into ``summary.json``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import apache_beam as beam

from transforms.common.code_digest import code_digest

from transforms.content.deidentify import (
    OPTIONS, PATIENT_ID, PATIENT_ID_COLUMN, PROFILE, DeidSettings, Deidentifier, profile_table,
)
from transforms.common.rows import Row, grouping_name
from transforms.content.pseudonyms import KeyFileError, PseudonymKey, Pseudonyms, random_key
from transforms.content.selection import Selection, SelectionError, parse_entry, parse_tag_list
from transforms.inputs.storage import is_bucket, workers_see_only_buckets

# Flag (as options.py declares it) -> Table E.1-1 option it enables.
# The modules whose code decides what a selected, de-identified row holds.
CONTENT_CODE_MODULES = (
    "transforms.content.settings", "transforms.content.deidentify",
    "transforms.content.pseudonyms", "transforms.content.selection",
)
RETAIN_FLAGS = {
    "retain_uids": "retain_uids",
    "retain_device_identity": "retain_device_identity",
    "retain_institution_identity": "retain_institution_identity",
    "retain_patient_characteristics": "retain_patient_characteristics",
    "retain_full_dates": "retain_longitudinal_full_dates",
    "retain_modified_dates": "retain_longitudinal_modified_dates",
}
# The series tables' keys (transforms/output/series.py): read for grouping even when a tag
# selection leaves them out, then kept out of the table (``RowContent.apply``).
SERIES_KEY_COLUMNS = {
    0x00100020: PATIENT_ID_COLUMN,
    0x0020000D: "Study Instance UID (0020,000D)",
    0x0020000E: "Series Instance UID (0020,000E)",
}
RANDOM_KEY_WARNING = (
    "warning: --deidentify without --pseudonym-key-file: pseudonyms use a random key for "
    "this run and will not match those of any other run"
)


class ContentOptionError(ValueError):
    """Options that cannot work together, or a key file that cannot be used."""


def tag_list(text: str) -> tuple:
    """argparse type of ``--tags``/``--exclude-tags``: validated entries (``@FILE`` read)."""
    import argparse  # pylint: disable=import-outside-toplevel

    try:
        return parse_tag_list(text)
    except SelectionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


tag_list.__name__ = "tag list"


def _may_be_private(segment) -> bool:
    return segment.creator is not None or not segment.mask & 0x00010000 or bool(
        segment.value & 0x00010000
    )


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


@dataclass(frozen=True)
class ContentSettings:
    selection: Selection = Selection()
    deid: DeidSettings | None = None
    key: PseudonymKey | None = field(default=None, repr=False)
    key_source: str = ""  # "file" or "random"
    csv_formula_guard: bool = False

    @classmethod
    def from_options(cls, options, key: bytes | None = None) -> "ContentSettings":
        """``options``: the parsed DicomExtractOptions. Raises ContentOptionError.
        Without a key file, ``key`` (or a new random key) is this run's key."""
        tags = tuple(options.tags or ())
        exclude = tuple(options.exclude_tags or ())
        deidentify = bool(options.deidentify)
        enabled = [dest for dest in RETAIN_FLAGS if getattr(options, dest, False)]
        dependent = enabled + [
            dest for dest in ("retain_safe_private", "pseudonym_key_file", "pseudonymize_paths")
            if getattr(options, dest, None)
        ]
        if dependent and not deidentify:
            raise ContentOptionError(f"{_flag(dependent[0])} needs --deidentify")
        if "retain_full_dates" in enabled and "retain_modified_dates" in enabled:
            raise ContentOptionError(
                "--retain-full-dates and --retain-modified-dates exclude each other"
            )
        if not deidentify:
            return cls(with_series_keys(Selection(tags, exclude)), None, None, "",
                       bool(options.csv_formula_guard))
        table_options = {RETAIN_FLAGS[dest] for dest in enabled}
        safe_private = tuple(options.retain_safe_private or ())
        for entry in safe_private:
            segments = parse_entry(entry)
            if len(segments) > 1 or not _may_be_private(segments[0]):
                raise ContentOptionError(
                    f"--retain-safe-private {entry!r}: name private elements (a creator "
                    "block, an odd-group tag or wildcard), without a path"
                )
        if safe_private:
            table_options.add("retain_safe_private")
        try:
            profile_table()
        except Exception as exc:  # pylint: disable=broad-except
            raise ContentOptionError(f"--deidentify: the PS3.15 table cannot be read: {exc}") from exc
        if workers_see_only_buckets(options) and not is_bucket(options.pseudonym_key_file or ""):
            raise ContentOptionError(
                "--deidentify on Dataflow: give --pseudonym-key-file gs://BUCKET/FILE, "
                "readable by the workers' service account (they read the key themselves; "
                "a random key, or this machine's file, would have to travel inside the "
                "staged job)")
        if options.pseudonym_key_file:
            try:
                key, source = PseudonymKey.from_file(options.pseudonym_key_file), "file"
            except KeyFileError as exc:
                raise ContentOptionError(str(exc)) from exc
        else:
            key, source = PseudonymKey(key or random_key()), "random"
        selection = Selection(tags, exclude)
        if selection and not selection.selects_top_level(PATIENT_ID):
            # Dates move by the patient's offset: Patient ID is read, then dropped.
            selection = Selection(tags, exclude, required=(PATIENT_ID,))
        deid = DeidSettings(frozenset(table_options), safe_private, bool(options.pseudonymize_paths))
        return cls(with_series_keys(selection), deid, key, source,
                   bool(options.csv_formula_guard))

    def reads_private(self, include_private: bool) -> bool:
        """Whether the walker reads private elements: asked for (by --include-private or
        a selected private entry), and not all removed by de-identification anyway."""
        if self.deid is not None:
            return bool(self.deid.safe_private)  # all other private elements are removed
        return include_private or self.selection.reads_private

    @property
    def hidden_columns(self) -> list[str]:
        """Columns read only for grouping (``required`` by the selection)."""
        return [SERIES_KEY_COLUMNS[tag] for tag in sorted(self.selection.required)
                if tag in SERIES_KEY_COLUMNS]

    @property
    def key_fingerprint(self) -> str:
        return Pseudonyms(self.key.value()).fingerprint if self.deid else ""

    def summary(self) -> dict:
        """Entries for summary.json (no key, no original value)."""
        entries = {
            "tags": list(self.selection.tags) or None,
            "exclude_tags": list(self.selection.exclude_tags) or None,
            "csv_formula_guard": self.csv_formula_guard,
            "deidentification": None,
        }
        if self.hidden_columns:
            entries["series_keys_read_not_shown"] = self.hidden_columns
        if self.deid is not None:
            source = {k: v for k, v in profile_table().source.items() if k != "file"}
            entries["deidentification"] = {
                "profile": PROFILE,
                "profile_code": "113100",
                "options": [
                    {"option": OPTIONS[name][1], "code": OPTIONS[name][0]}
                    for name in sorted(self.deid.options)
                ],
                "safe_private": list(self.deid.safe_private) or None,
                "pseudonymized_paths": self.deid.pseudonymize_paths,
                "key_fingerprint": self.key_fingerprint,
                "key": "from file" if self.key_source == "file" else "random for this run",
                "action_table": source,
            }
        return entries

    def fingerprint(self) -> dict:
        """What stored rows depend on beyond the flatten settings (for incremental state)."""
        entries = {
            "tags": list(self.selection.tags),
            "exclude_tags": list(self.selection.exclude_tags),
            "deidentify": self.deid is not None,
        }
        if not self.selection and self.deid is None:
            return entries  # rows made by flatten alone (its code is fingerprinted already)
        entries["content_code"] = code_digest(CONTENT_CODE_MODULES)[:16]
        if self.deid is not None:
            source = profile_table().source
            entries.update({
                "deid_options": sorted(self.deid.options),
                "safe_private": list(self.deid.safe_private),
                "pseudonymize_paths": self.deid.pseudonymize_paths,
                "key_fingerprint": self.key_fingerprint,
                "action_table": [source.get("package"), source.get("edition"),
                                 source.get("sha256_of_source_xml")],
            })
        return entries


def with_series_keys(selection: Selection) -> Selection:
    """``selection`` that also reads the series keys it leaves out (for grouping)."""
    if not selection:
        return selection
    missing = [tag for tag in SERIES_KEY_COLUMNS if not selection.selects_top_level(tag)]
    required = tuple(sorted(set(selection.required) | set(missing)))
    if required == tuple(selection.required):
        return selection
    return Selection(selection.tags, selection.exclude_tags, required=required)


class TablePath:
    """``DicomPath`` as the table shows it: the file's path, or its keyed pseudonym with
    ``--pseudonymize-paths`` (the state keeps real paths to match files by)."""

    def __init__(self, settings: ContentSettings):
        self.key = settings.key if settings.deid and settings.deid.pseudonymize_paths else None
        self._pseudonyms = None

    def __bool__(self) -> bool:
        return self.key is not None

    def __getstate__(self):
        return {"key": self.key}

    def __setstate__(self, state):
        self.key, self._pseudonyms = state["key"], None

    def __call__(self, path: str) -> str:
        if self.key is None:
            return path
        if self._pseudonyms is None:
            self._pseudonyms = Pseudonyms(self.key.value())
        return self._pseudonyms.path(path)

    def record(self, record: tuple) -> tuple:
        """An errors/skipped record ``(path, ...)`` with the path replaced everywhere."""
        path, *rest = record
        shown = self(path)
        return (shown, *(str(part).replace(path, shown) for part in rest))

    def manifest_entry(self, entry: tuple) -> tuple:
        """A state outcome ``(path, size, mtime, kind, details)`` with its path replaced:
        the state of a run with pseudonymized paths names no real path either (its rows
        are not reused, so nothing needs the real one)."""
        path, size, mtime, kind, details = entry
        shown = self(path)
        return (shown, size, mtime, kind, tuple(str(part).replace(path, shown) for part in details))


def _add_counts(records) -> tuple:
    return tuple(map(sum, zip(*records))) or (0,)


class SumContentCounts(beam.PTransform):
    """``CONTENT_COUNTS`` records -> one dict for the summary (zeros when none came)."""

    def expand(self, counts):
        return (
            counts
            | "Sum" >> beam.CombineGlobally(_add_counts)
            | "AsDict" >> beam.Map(lambda total: {"free_text_replacements": total[0]})
        )


class PseudonymizeReportPaths(beam.PTransform):
    """Errors or skipped records with their paths pseudonymized, when asked; else as is."""

    def __init__(self, table_path: TablePath, manifest: bool = False):
        super().__init__()
        self.table_path = table_path
        self.manifest = manifest  # state outcome entries rather than report records

    def expand(self, records):
        if not self.table_path:
            return records
        change = self.table_path.manifest_entry if self.manifest else self.table_path.record
        return records | "PseudonymPaths" >> beam.Map(change)


class RowContent:
    """The Row step of extraction: de-identify (when asked), drop what was only read
    for it. Built once per worker from picklable settings."""

    def __init__(self, settings: ContentSettings):
        self.settings = settings
        self._deidentifier = None
        self.replacements = 0  # originals replaced in kept free text, since last taken

    def __getstate__(self):
        return {"settings": self.settings}

    def __setstate__(self, state):
        self.settings = state["settings"]
        self._deidentifier = None
        self.replacements = 0

    def take_counts(self) -> tuple | None:
        """The ``CONTENT_COUNTS`` record of the rows applied since the last call (None
        when nothing to report), for the summary's ``free_text_replacements``."""
        if not self.replacements:
            return None
        counts, self.replacements = (self.replacements,), 0
        return counts

    @property
    def active(self) -> bool:
        return self.settings.deid is not None or bool(self.settings.selection.required)

    def apply(self, row: Row) -> Row:
        settings = self.settings
        if settings.deid is not None:
            if self._deidentifier is None:
                self._deidentifier = Deidentifier(settings.deid, Pseudonyms(settings.key.value()))
            patient_id = row.values.get(PATIENT_ID_COLUMN, "")
            row, replaced = self._deidentifier.apply(row, patient_id)
            self.replacements += replaced
        # Read only for de-identification or grouping: kept as grouping cells (a
        # de-identified Patient ID is its pseudonym), never as columns.
        for name in settings.hidden_columns:
            if name in row.values:
                row.values[grouping_name(name)] = row.values.pop(name)
                row.vrs[grouping_name(name)] = row.vrs.pop(name, None)
        return row


def warn_random_key(settings: ContentSettings, prog: str, stream=None) -> None:
    if settings.deid is not None and settings.key_source == "random":
        print(f"{prog}: {RANDOM_KEY_WARNING}", file=stream or sys.stderr)
