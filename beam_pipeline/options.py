"""The pipeline's own options, declared once for the CLI and for every runner."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


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

FORMATS = ("csv", "parquet")


def output_formats(text: str) -> str:
    """``csv``, ``parquet`` or both (``csv,parquet``), normalised to that order."""
    chosen = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = chosen - set(FORMATS)
    if unknown or not chosen:
        raise ValueError(f"{text!r} is not csv, parquet or csv,parquet")
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
            help="csv, parquet or csv,parquet. -o scan.csv or -o scan.parquet: the CSV is "
            "scan.csv, the Parquet file scan.parquet.",
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
        # Hostile archives: per-file limits (transforms/limits.py) and bounded cells
        # (transforms/cells.py). 0 turns a limit off.
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
