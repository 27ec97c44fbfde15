"""What ``--tags`` saves, and what ``--deidentify`` costs, on one archive, in one run.

``python -m benchmarks.tag_selection ARCHIVE [--repeats 5] [--tags LIST] [--cli]``

Extraction in this process (``ExtractHeaders._read`` on every file: read the header,
walk it, build the row), the same files for every variant, the variants interleaved
repeat by repeat so that the shared machine's noise hits them alike; each figure is the
median of the repeats as CPU seconds of this process (``time.process_time``), reported
as a ratio to the anchor, the run with every element. Also: elements converted per file
(cells of the row) and, with ``--cli``, the whole command's wall time for the anchor and
for ``--tags``.

Variants: all elements (anchor); ``--tags`` (default: a typical cohort list of ten
top-level elements and one nested path); ``--exclude-tags (0029,xxxx)`` with
``--include-private``; ``--deidentify`` (Row step on every row); and pydicom's header parse alone, the part of
the cost that selecting elements cannot remove.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

COHORT_TAGS = (
    "PatientID,StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID,Modality,StudyDate,"
    "SeriesDescription,Rows,Columns,PixelSpacing,"
    "ReferencedImageSequence.ReferencedSOPInstanceUID"
)


def _extractor(flags: list[str]):
    """ExtractHeaders built from CLI flags, as build_pipeline builds it."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipeline.options import DicomExtractOptions
    from transforms.content.settings import ContentSettings, RowContent
    from transforms.reading.extract import ExtractHeaders
    from transforms.reading.flatten import FlattenSettings

    options = PipelineOptions(flags).view_as(DicomExtractOptions)
    content = ContentSettings.from_options(options, key=b"benchmark key 0123456789")
    settings = FlattenSettings(
        include_private=content.reads_private(options.include_private),
        max_sequence_items=options.max_sequence_items,
        max_binary_bytes=options.max_binary_bytes,
        selection=content.selection or None,
    )
    extractor = ExtractHeaders(settings, None, RowContent(content))
    extractor.setup()
    return extractor


class _ParseOnly:
    """The floor no selection can go below: pydicom's header parse, nothing else."""

    def _read(self, path, size):  # pylint: disable=unused-argument
        from pydicom import dcmread

        with open(path, "rb") as stream:
            return dcmread(stream, stop_before_pixels=True, defer_size=4096, force=True)


def _one_pass(extractor, files) -> tuple[float, int]:
    cells = 0
    started = time.process_time()
    for path, size in files:
        row = extractor._read(path, size)  # pylint: disable=protected-access
        values = getattr(row, "values", None)
        cells += len(values) if isinstance(values, dict) else 0
    return time.process_time() - started, cells


def _cli_seconds(archive: str, flags: list[str]) -> float:
    with tempfile.TemporaryDirectory(prefix="tag-selection-") as work:
        command = [sys.executable, "-m", "beam_pipeline", archive, "-o",
                   os.path.join(work, "scan.csv"), "--quiet", *flags]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        return time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tags", default=COHORT_TAGS)
    parser.add_argument("--cli", action="store_true", help="also time the whole command")
    args = parser.parse_args(argv)

    files = sorted(
        (os.path.join(folder, name), os.path.getsize(os.path.join(folder, name)))
        for folder, _, names in os.walk(args.archive) for name in names
    )
    variants = {
        "all elements (anchor)": [],
        f"--tags ({len(args.tags.split(','))} entries)": ["--tags", args.tags],
        "--include-private --exclude-tags (0029,xxxx)": [
            "--include-private", "--exclude-tags", "(0029,xxxx)"],
        "--deidentify": ["--deidentify"],
    }
    extractors = {name: _extractor(flags) for name, flags in variants.items()}
    extractors["dcmread only (floor, no row)"] = _ParseOnly()
    for extractor in extractors.values():  # warm caches (column names, imports, page cache)
        _one_pass(extractor, files[:50])
    seconds = {name: [] for name in extractors}
    cells = {}
    for _ in range(args.repeats):
        for name, extractor in extractors.items():
            spent, count = _one_pass(extractor, files)
            seconds[name].append(spent)
            cells[name] = count / len(files)
    anchor = statistics.median(seconds["all elements (anchor)"])
    print(f"{len(files)} files, {args.repeats} repeats, median CPU s of extraction in-process")
    print(f"{'variant':48} {'CPU s':>7} {'ratio':>6} {'files/s':>8} {'cells/file':>10}")
    for name in extractors:
        median = statistics.median(seconds[name])
        print(f"{name:48} {median:7.2f} {median / anchor:6.2f} {len(files) / median:8.0f} "
              f"{cells[name]:10.1f}")
    if args.cli:
        full = _cli_seconds(args.archive, [])
        selected = _cli_seconds(args.archive, ["--tags", args.tags])
        print(f"whole command, wall s: all elements {full:.1f}, --tags {selected:.1f} "
              f"(ratio {selected / full:.2f})")


if __name__ == "__main__":
    main()
