"""One extraction run: the output lock, the progress bar, the pipeline, its summary line."""

from __future__ import annotations

import json
import time
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipeline.local_runner import is_local, make_runner
from beam_pipeline.lock import OutputLock, lock_path_for
from beam_pipeline.options import DicomExtractOptions
from beam_pipeline.pipeline import ExtractDicomMetadata, plan_run
from beam_pipeline.stopping import (
    discard_attempt, disk_full, end_children, quiet_endings, stop_on_signals,
)
from beam_pipeline.progress import ProgressBar
from transforms.common.beam_internals import remember_dofn_specs
from transforms.output.state import state_dir_for
from transforms.report.summary import OutputPaths


def run(inputs: list[str], options: PipelineOptions, quiet: bool = True,
        verbose: bool = False, stderr=None, observe=None) -> dict:
    """Run the extraction and return its summary; the progress bar goes to ``stderr``.
    ``observe(result)``, when given, sees the finished ``PipelineResult`` (the
    benchmarks' stage profile reads its metrics)."""
    extract_options = options.view_as(DicomExtractOptions)
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
    paths = OutputPaths.for_output(
        extract_options.output, run_id, extract_options.format.split(",")
    )
    started = time.time()
    FileSystems.set_options(options)
    # Before any work: one run per output (raises OutputLocked naming the holder).
    lock = OutputLock(lock_path_for(paths.table), run_id, extract_options.wait_for_lock,
                      options)
    # Signals stop the run; an early end leaves no temp file (beam_pipeline/stopping.py).
    with lock, stop_on_signals(), quiet_endings():
        try:
            with ProgressBar(enabled=not quiet and is_local(options), stream=stderr) as bar:
                progress = bar.reporter() if is_local(options) else None
                run_plan = plan_run(inputs, extract_options, paths, started)
                remember_dofn_specs()  # builds the pipeline in a third less time
                pipeline = beam.Pipeline(runner=make_runner(options, verbose), options=options)
                _ = pipeline | "ExtractDicomMetadata" >> ExtractDicomMetadata(run_plan, progress)
                result = pipeline.run()
                result.wait_until_finish()
        except BaseException as exc:
            if is_local(options):
                end_children()
            discard_attempt(paths.temp_dir, state_dir_for(paths.table), run_id,
                            keep_generation=disk_full(exc) is None)
            raise
        if observe is not None:
            observe(result)
    with FileSystems.open(paths.summary) as stream:
        return json.loads(stream.read())


def describe(summary: dict) -> str:
    accounted = (
        "every matched file is accounted for"
        if summary["accounted_for"]
        else "WARNING: rows + errors + skipped do not add up to the files matched"
    )
    return (
        f"Matched {summary['files_matched']} files in {summary['seconds']:.1f} s: "
        f"{summary['rows']} rows with {summary['columns']} columns written to "
        f"{' and '.join(summary.get('outputs', [summary['table']]))}"
        f"{_unparseable(summary)}, {summary['errors']} errors (see {summary['errors_file']}), "
        f"{summary['non_dicom_skipped']} non-DICOM files skipped (see "
        f"{summary['skipped_file']}); {accounted}.{_report(summary)}"
    )


def _report(summary: dict) -> str:
    return f" Report: {summary['report_file']}" if summary.get("report_file") else ""


def _unparseable(summary: dict) -> str:
    count = summary.get("parquet_unparseable_values")
    if not count:
        return ""
    return f" ({count} values not of their column's type are null in Parquet, text in CSV)"
