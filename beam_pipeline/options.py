"""The pipeline's own options, declared once for the CLI and for every runner."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.content.settings import tag_list
from transforms.output.keyword_names import NAMINGS, SEED
from transforms.inputs.dicomweb import modality_list, study_date_range


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


non_negative_int.__name__ = "non-negative integer"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{value} is not positive")
    return value


positive_int.__name__ = "positive integer"


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise ValueError(f"{value} is not a non-negative number")
    return value


non_negative_float.__name__ = "non-negative number"

FORMATS = ("csv", "parquet", "nested", "json")


def output_formats(text: str) -> str:
    """Any of ``csv``, ``parquet``, ``nested``, ``json`` (``csv,nested``), normalised to
    that order."""
    chosen = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = chosen - set(FORMATS)
    if unknown or not chosen:
        raise ValueError(f"{text!r} is not a list of csv, parquet, nested and json")
    return ",".join(name for name in FORMATS if name in chosen)


output_formats.__name__ = "format list"


# Every option, by --help group, in the order --help lists them: (name, help, argparse
# settings). ``name`` gives ``--name`` and Beam's spelling ``--name_with_underscores``;
# the value is stored under the latter unless ``dest`` says otherwise.
OUTPUT = ("Output", (
    ("format", "csv, parquet, nested, json or a list of them (csv,nested,json). -o "
     "scan.csv or -o scan.parquet: the CSV is scan.csv, the Parquet file scan.parquet, the "
     "keyword-named nested Parquet scan.nested.parquet, the DICOM JSON lines scan.jsonl.",
     dict(metavar="LIST", type=output_formats, default="csv")),
    ("rows-per-part", "With -o FOLDER/ and --format nested: the nested table is the Parquet "
     "dataset FOLDER/part-*.parquet, written in parallel, this many rows per part; the "
     "other outputs go beside the folder (FOLDER.csv, FOLDER.summary.json, ...).",
     dict(metavar="N", type=positive_int, default=10_000)),
    ("column-names", "seed (default: Patient's Name (0010,0010)) or keyword (PatientName, "
     "ReferencedImageSequence_2__ReferencedSOPInstanceUID): the names the CSV and Parquet "
     "columns are written with; keyword names load as they are into BigQuery, Delta Lake, "
     "Spark and DuckDB.",
     dict(metavar="NAMING", choices=NAMINGS, default=SEED)),
    ("no-series-tables", "Do not write scan.series.csv and scan.studies.csv (one row per "
     "series, per study, with completeness checks) nor their Parquet twins.",
     dict(dest="series_tables", action="store_false", default=True)),
    ("csv-formula-guard", "Prefix CSV text cells that start with =, +, -, @, tab or CR with ' "
     "(never numeric VRs), so spreadsheets do not run them as formulas.",
     dict(action="store_true", default=False)),
))
EXTRACTION = ("Extraction", (
    ("include-private", "Also extract private elements, named with their private creator.",
     dict(action="store_true", default=False)),
    ("max-sequence-items", "Items kept per sequence (0 = all); the true count goes to "
     "'#items'.", dict(type=non_negative_int, default=16)),
    ("max-binary-bytes", "Binary values up to this size are written as hex, longer as "
     "'<N bytes>'.", dict(type=non_negative_int, default=64)),
))
RUNS = ("Runs", (
    ("rows-per-shard", "Rows per temporary shard (bounds each worker's memory).",
     dict(type=non_negative_int, default=5000)),
    ("incremental", "Reuse the rows of the previous output for files whose size and "
     "modification time are unchanged, and for DICOMweb series whose SOP Instance UIDs "
     "are unchanged; extract only new or changed files and series.",
     dict(action="store_true", default=False)),
    # Output lifecycle (transforms/output): one writer per output.
    ("wait-for-lock", "When another run holds the output's lock, wait up to SECONDS for it "
     "(default 0: stop at once with exit status 2).",
     dict(type=float, default=0.0, metavar="SECONDS")),
))
# Hostile archives: per-file limits (transforms/inputs/limits.py) and bounded cells
# (transforms/reading/cells.py). 0 turns a limit off.
LIMITS = ("Per-file limits (0 = off)", (
    ("file-timeout", "Seconds one file may take; past it: error 'Timeout', the run goes on.",
     dict(metavar="SECONDS", type=non_negative_float, default=60.0)),
    ("max-header-bytes", "Bytes read per file; past it: error 'TooLarge'. Nothing past the "
     "cap is read or downloaded.", dict(metavar="N", type=non_negative_int, default=64 << 20)),
    ("max-values", "Numeric elements with more values are written '<N values>'.",
     dict(metavar="N", type=non_negative_int, default=256)),
    ("max-cell-chars", "Longer text is cut; it ends with ' [cut: N characters in all]'.",
     dict(metavar="N", type=non_negative_int, default=32000)),
))
# What goes into the table (transforms/content/): tag selection, de-identification.
SELECTION = ("Tag selection", (
    ("tags", "Only these elements, comma-separated or @FILE (one per line, # comments): "
     "keywords (PatientID), tags ((0010,0020), 00100020), wildcards ((0029,xxxx)), "
     "private creator blocks ([SIEMENS CSA HEADER]), nested paths "
     "(ReferencedImageSequence.ReferencedSOPInstanceUID).",
     dict(metavar="LIST", type=tag_list, default=None)),
    ("exclude-tags", "Leave these elements out; same entries as --tags, exclusion wins.",
     dict(metavar="LIST", type=tag_list, default=None)),
))
RETAIN_OPTIONS = (
    ("retain-modified-dates", "Retain Longitudinal Temporal Information with Modified Dates "
     "Option: dates move by a per-patient offset derived from the key"),
    ("retain-full-dates", "Retain Longitudinal Temporal Information with Full Dates Option"),
    ("retain-patient-characteristics", "Retain Patient Characteristics Option"),
    ("retain-device-identity", "Retain Device Identity Option"),
    ("retain-institution-identity", "Retain Institution Identity Option"),
    ("retain-uids", "Retain UIDs Option"),
)
DEIDENTIFICATION = ("De-identification (DICOM PS3.15 Annex E)", (
    ("deidentify", "Apply the Basic Application Level Confidentiality Profile to every "
     "column; private elements are removed.", dict(action="store_true", default=False)),
    ("pseudonym-key-file", "Key of the HMAC-SHA256 pseudonyms (Patient ID, UIDs, date "
     "offsets): the same key gives the same pseudonyms in every run; at least 16 bytes. "
     "Local, gs:// or s3://: every worker reads it itself (on Dataflow: a bucket).",
     dict(metavar="FILE", default=None)),
    *((flag, f"The {option}.", dict(action="store_true", default=False))
      for flag, option in RETAIN_OPTIONS),
    ("retain-safe-private", "Keep these private elements (creator blocks, private tags, "
     "wildcards; @FILE), which you know to be safe.",
     dict(metavar="LIST", type=tag_list, default=None)),
    ("pseudonymize-paths", "DicomPath becomes a keyed pseudonym, also in errors and skipped "
     "files.", dict(action="store_true", default=False)),
))
ARCHIVES = ("Archives", (  # zip and tar members (transforms/reading/archives.py)
    ("no-archives", "Do not read the members of zip and tar files: archives are then "
     "skipped files.", dict(dest="read_archives", action="store_false", default=True)),
))
# DICOMweb sources (transforms/inputs/dicomweb.py): dicomweb+http(s):// inputs.
DICOMWEB = ("DICOMweb sources (dicomweb+http(s)://HOST/ROOT inputs)", (
    ("study-date", "Only studies of these dates: 20240101-20241231, 20240101, -20231231, "
     "20240101- (QIDO-RS range matching).",
     dict(metavar="RANGE", type=study_date_range, default=None)),
    ("modality", "Only series of these modalities, comma-separated (CT,MR).",
     dict(metavar="LIST", type=modality_list, default=None)),
    ("dicomweb-user", "HTTP basic authentication user (with a password below).",
     dict(metavar="USER", default=None)),
    ("dicomweb-password-file", "File holding the basic authentication password (local, "
     "gs:// or s3://: every worker reads it itself).",
     dict(metavar="FILE", default=None)),
    ("dicomweb-password-env", "Environment variable holding the basic authentication "
     "password.", dict(metavar="VAR", default=None)),
    ("dicomweb-token-file", "File holding a bearer token (Authorization: Bearer); local, "
     "gs:// or s3://.",
     dict(metavar="FILE", default=None)),
    ("dicomweb-token-env", "Environment variable holding a bearer token.",
     dict(metavar="VAR", default=None)),
    ("dicomweb-ca-bundle", "PEM file of the certificate authorities to trust for https.",
     dict(metavar="FILE", default=None)),
    ("dicomweb-timeout", "Seconds to wait for each answer (each request has this timeout).",
     dict(metavar="SECONDS", type=non_negative_float, default=60.0)),
    ("dicomweb-retries", "Retries of a request that failed (429/5xx, timeout, dropped "
     "connection), with backoff, honouring Retry-After.",
     dict(metavar="N", type=non_negative_int, default=5)),
    ("dicomweb-page-size", "Studies per QIDO-RS page (limit); every page is followed.",
     dict(metavar="N", type=non_negative_int, default=100)),
))
GROUPS = (OUTPUT, EXTRACTION, RUNS, LIMITS, SELECTION, DEIDENTIFICATION, ARCHIVES, DICOMWEB)


def add_option(group, name: str, help_text: str, settings: dict) -> None:
    """``--name`` and ``--name_with_underscores`` (Beam's spelling), stored under the
    latter unless ``settings`` names a ``dest``."""
    snake = name.replace("-", "_")
    flags = [f"--{name}"] + ([f"--{snake}"] if snake != name else [])
    group.add_argument(*flags, **{"dest": snake, **settings}, help=help_text)


class DicomExtractOptions(PipelineOptions):
    # --help (beam_pipeline/short_help.py) lists every option declared here by argument
    # group, with the first sentence of its help text; options added straight to the
    # parser appear under ``help_group``.
    help_group = "More options"

    @classmethod
    def _add_argparse_args(cls, parser):
        for title, options in GROUPS:
            group = parser.add_argument_group(title)
            if title == OUTPUT[0]:
                group.add_argument(
                    "-o", "--output", metavar="PATH",
                    help="Output path, scan.csv or scan.parquet (local, gs:// or s3://); "
                    "with --format nested, a folder scan/ (see --rows-per-part).")
            for name, help_text, settings in options:
                add_option(group, name, help_text, settings)
