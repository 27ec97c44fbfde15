"""The pipeline's own options, declared once for the CLI and for every runner."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


non_negative_int.__name__ = "non-negative integer"

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
        # Archives (zip and tar members, transforms/archives.py)
        parser.add_argument(
            "--no-archives", "--no_archives",
            dest="read_archives", action="store_false", default=True,
            help="Do not read the members of zip and tar files: archives are then "
            "skipped files.",
        )
