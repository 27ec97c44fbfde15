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


class DicomExtractOptions(PipelineOptions):
    # --help (beam_pipeline/short_help.py) lists every option declared here by argument
    # group, with the first sentence of its help text; options added straight to the
    # parser appear under ``help_group``.
    help_group = "More options"

    @classmethod
    def _add_argparse_args(cls, parser):
        output = parser.add_argument_group("Output")
        extraction = parser.add_argument_group("Extraction")
        run = parser.add_argument_group("Runs")
        output.add_argument(
            "-o", "--output", metavar="PATH",
            help="Output path, scan.csv or scan.parquet (local, gs:// or s3://).",
        )
        output.add_argument(
            "--format", dest="format", metavar="LIST", type=output_formats, default="csv",
            help="csv, parquet, nested, json or a list of them (csv,nested,json). -o "
            "scan.csv or -o scan.parquet: the CSV is scan.csv, the Parquet file "
            "scan.parquet, the keyword-named nested Parquet scan.nested.parquet, the DICOM "
            "JSON lines scan.jsonl.",
        )
        output.add_argument(
            "--column-names", "--column_names", dest="column_names", metavar="NAMING",
            choices=NAMINGS, default=SEED,
            help="seed (default: Patient's Name (0010,0010)) or keyword (PatientName, "
            "ReferencedImageSequence_2__ReferencedSOPInstanceUID): the names the CSV and "
            "Parquet columns are written with; keyword names load as they are into "
            "BigQuery, Delta Lake, Spark and DuckDB.",
        )
        extraction.add_argument(
            "--include-private", "--include_private",
            dest="include_private", action="store_true", default=False,
            help="Also extract private elements, named with their private creator.",
        )
        extraction.add_argument(
            "--max-sequence-items", "--max_sequence_items",
            dest="max_sequence_items", type=non_negative_int, default=16,
            help="Items kept per sequence (0 = all); the true count goes to '#items'.",
        )
        extraction.add_argument(
            "--max-binary-bytes", "--max_binary_bytes",
            dest="max_binary_bytes", type=non_negative_int, default=64,
            help="Binary values up to this size are written as hex, longer as '<N bytes>'.",
        )
        run.add_argument(
            "--rows-per-shard", "--rows_per_shard",
            dest="rows_per_shard", type=non_negative_int, default=5000,
            help="Rows per temporary shard (bounds each worker's memory).",
        )
        run.add_argument(
            "--incremental", action="store_true", default=False,
            help="Reuse the rows of the previous output for files whose size and "
            "modification time are unchanged; extract only new or changed files.",
        )
        # Output lifecycle (transforms/output): one writer per output.
        run.add_argument(
            "--wait-for-lock", "--wait_for_lock",
            dest="wait_for_lock", type=float, default=0.0, metavar="SECONDS",
            help="When another run holds the output's lock, wait up to SECONDS for it "
            "(default 0: stop at once with exit status 2).",
        )
        # Hostile archives: per-file limits (transforms/inputs/limits.py) and bounded cells
        # (transforms/reading/cells.py). 0 turns a limit off.
        limits = parser.add_argument_group("Per-file limits (0 = off)")
        limits.add_argument(
            "--file-timeout", "--file_timeout", metavar="SECONDS",
            dest="file_timeout", type=non_negative_float, default=60.0,
            help="Seconds one file may take; past it: error 'Timeout', the run goes on.",
        )
        limits.add_argument(
            "--max-header-bytes", "--max_header_bytes", metavar="N",
            dest="max_header_bytes", type=non_negative_int, default=64 << 20,
            help="Bytes read per file; past it: error 'TooLarge'. Nothing past "
            "the cap is read or downloaded.",
        )
        limits.add_argument(
            "--max-values", "--max_values", metavar="N",
            dest="max_values", type=non_negative_int, default=256,
            help="Numeric elements with more values are written '<N values>'.",
        )
        limits.add_argument(
            "--max-cell-chars", "--max_cell_chars", metavar="N",
            dest="max_cell_chars", type=non_negative_int, default=32000,
            help="Longer text is cut; it ends with ' [cut: N characters in all]'.",
        )
        # What goes into the table: tag selection, de-identification, spreadsheet safety
        # (transforms/content/selection.py, transforms/content/deidentify.py, transforms/content/settings.py).
        selection = parser.add_argument_group("Tag selection")
        deid = parser.add_argument_group("De-identification (DICOM PS3.15 Annex E)")
        selection.add_argument(
            "--tags", metavar="LIST", type=tag_list, default=None,
            help="Only these elements, comma-separated or @FILE (one per line, # comments): "
            "keywords (PatientID), tags ((0010,0020), 00100020), wildcards ((0029,xxxx)), "
            "private creator blocks ([SIEMENS CSA HEADER]), nested paths "
            "(ReferencedImageSequence.ReferencedSOPInstanceUID).",
        )
        selection.add_argument(
            "--exclude-tags", "--exclude_tags", dest="exclude_tags", metavar="LIST",
            type=tag_list, default=None,
            help="Leave these elements out; same entries as --tags, exclusion wins.",
        )
        deid.add_argument(
            "--deidentify", action="store_true", default=False,
            help="Apply the Basic Application Level Confidentiality Profile to every "
            "column; private elements are removed.",
        )
        deid.add_argument(
            "--pseudonym-key-file", "--pseudonym_key_file", dest="pseudonym_key_file",
            metavar="FILE", default=None,
            help="Key of the HMAC-SHA256 pseudonyms (Patient ID, UIDs, date offsets): the "
            "same key gives the same pseudonyms in every run; at least 16 bytes.",
        )
        for flag, option in (
            ("retain-modified-dates",
             "Retain Longitudinal Temporal Information with Modified Dates Option: dates "
             "move by a per-patient offset derived from the key"),
            ("retain-full-dates", "Retain Longitudinal Temporal Information with Full Dates Option"),
            ("retain-patient-characteristics", "Retain Patient Characteristics Option"),
            ("retain-device-identity", "Retain Device Identity Option"),
            ("retain-institution-identity", "Retain Institution Identity Option"),
            ("retain-uids", "Retain UIDs Option"),
        ):
            dest = flag.replace("-", "_")
            deid.add_argument(
                f"--{flag}", f"--{dest}", dest=dest, action="store_true", default=False,
                help=f"The {option}.",
            )
        deid.add_argument(
            "--retain-safe-private", "--retain_safe_private", dest="retain_safe_private",
            metavar="LIST", type=tag_list, default=None,
            help="Keep these private elements (creator blocks, private tags, wildcards; "
            "@FILE), which you know to be safe.",
        )
        deid.add_argument(
            "--pseudonymize-paths", "--pseudonymize_paths", dest="pseudonymize_paths",
            action="store_true", default=False,
            help="DicomPath becomes a keyed pseudonym, also in errors and skipped files.",
        )
        output.add_argument(
            "--no-series-tables", "--no_series_tables",
            dest="series_tables", action="store_false", default=True,
            help="Do not write scan.series.csv and scan.studies.csv (one row per series, "
            "per study, with completeness checks) nor their Parquet twins.",
        )
        output.add_argument(
            "--csv-formula-guard", "--csv_formula_guard", dest="csv_formula_guard",
            action="store_true", default=False,
            help="Prefix CSV text cells that start with =, +, -, @, tab or CR with ' "
            "(never numeric VRs), so spreadsheets do not run them as formulas.",
        )
        # Archives (zip and tar members, transforms/reading/archives.py)
        archives = parser.add_argument_group("Archives")
        archives.add_argument(
            "--no-archives", "--no_archives",
            dest="read_archives", action="store_false", default=True,
            help="Do not read the members of zip and tar files: archives are then "
            "skipped files.",
        )
        # DICOMweb sources (transforms/inputs/dicomweb.py): dicomweb+http(s):// inputs.
        web = parser.add_argument_group("DICOMweb sources (dicomweb+http(s)://HOST/ROOT inputs)")
        web.add_argument(
            "--study-date", "--study_date", dest="study_date", metavar="RANGE",
            type=study_date_range, default=None,
            help="Only studies of these dates: 20240101-20241231, 20240101, -20231231, "
            "20240101- (QIDO-RS range matching).",
        )
        web.add_argument(
            "--modality", metavar="LIST", type=modality_list, default=None,
            help="Only series of these modalities, comma-separated (CT,MR).",
        )
        web.add_argument(
            "--dicomweb-user", "--dicomweb_user", dest="dicomweb_user", metavar="USER",
            default=None, help="HTTP basic authentication user (with a password below).",
        )
        web.add_argument(
            "--dicomweb-password-file", "--dicomweb_password_file",
            dest="dicomweb_password_file", metavar="FILE", default=None,
            help="File holding the basic authentication password.",
        )
        web.add_argument(
            "--dicomweb-password-env", "--dicomweb_password_env",
            dest="dicomweb_password_env", metavar="VAR", default=None,
            help="Environment variable holding the basic authentication password.",
        )
        web.add_argument(
            "--dicomweb-token-file", "--dicomweb_token_file",
            dest="dicomweb_token_file", metavar="FILE", default=None,
            help="File holding a bearer token (Authorization: Bearer).",
        )
        web.add_argument(
            "--dicomweb-token-env", "--dicomweb_token_env",
            dest="dicomweb_token_env", metavar="VAR", default=None,
            help="Environment variable holding a bearer token.",
        )
        web.add_argument(
            "--dicomweb-ca-bundle", "--dicomweb_ca_bundle", dest="dicomweb_ca_bundle",
            metavar="FILE", default=None,
            help="PEM file of the certificate authorities to trust for https.",
        )
        web.add_argument(
            "--dicomweb-timeout", "--dicomweb_timeout", dest="dicomweb_timeout",
            metavar="SECONDS", type=non_negative_float, default=60.0,
            help="Seconds to wait for each answer (each request has this timeout).",
        )
        web.add_argument(
            "--dicomweb-retries", "--dicomweb_retries", dest="dicomweb_retries", metavar="N",
            type=non_negative_int, default=5,
            help="Retries of a request that failed (429/5xx, timeout, dropped connection), "
            "with backoff, honouring Retry-After.",
        )
        web.add_argument(
            "--dicomweb-page-size", "--dicomweb_page_size", dest="dicomweb_page_size",
            metavar="N", type=non_negative_int, default=100,
            help="Studies per QIDO-RS page (limit); every page is followed.",
        )
