"""The stage profile (``benchmarks/stage_profile.py``) groups the pipeline's steps into
stages by their labels: every step of the real graph must land in a named stage, so a
renamed or new step fails here instead of turning a measured profile into "other"."""

from __future__ import annotations

import apache_beam as beam
import pytest

from beam_pipeline.arguments import parse
from beam_pipeline.options import DicomExtractOptions
from beam_pipeline.pipeline import build_pipeline
from benchmarks.stage_profile import ORDER, split_cli_flags, stage_of_fused, stage_of_step
from tests.conftest import copy_pydicom_file
from transforms.report.summary import OutputPaths


def _step_labels(arguments: list) -> list[str]:
    """The leaf steps of the graph the CLI builds for ``arguments`` (built, not run)."""
    inputs, options, _ = parse(arguments)
    extract = options.view_as(DicomExtractOptions)
    paths = OutputPaths.for_output(extract.output, "graph", extract.format.split(","))
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, inputs, extract, paths, 0.0)
    labels = []

    class Steps(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            labels.append(node.full_label)

    pipeline.visit(Steps())
    return labels


@pytest.mark.parametrize("flags", [[], ["--format", "csv,parquet,json,nested", "--incremental"]])
def test_every_step_of_the_pipeline_is_in_a_named_stage(tmp_path, flags):
    folder = tmp_path / "in"
    folder.mkdir()
    copy_pydicom_file("CT_small.dcm", folder)
    labels = _step_labels([str(folder), "-o", str(tmp_path / "scan.csv"), *flags])
    stages = {label: stage_of_step(label) for label in labels}
    assert [label for label, stage in stages.items() if stage == "other"] == []
    assert set(stages.values()) == set(ORDER) - {"other"}


def test_fused_stage_names_are_read_as_the_runner_writes_them():
    fused = ("((ref_AppliedPTransform_ExtractDicomMetadata-WriteSeriesTables-Summarize-Read_80)"
             "+(ref_AppliedPTransform_ExtractDicomMetadata-WriteSeriesTables-Summarize-"
             "Combine-Precombine_82))+(ref_AppliedPTransform_ExtractDicomMetadata-StoreRows-"
             "Spill_40)")
    assert stage_of_fused(fused) == "spill+series"
    grouping = ("(((ExtractDicomMetadata/WriteSeriesTables/Summarize/Combine/Group/Read)+"
                "(ExtractDicomMetadata/WriteSeriesTables/Summarize/Combine/Merge))+"
                "(ref_PCollection_PCollection_126/Write)")
    assert stage_of_fused(grouping) == "series"
    assert stage_of_fused("ref_PCollection_PCollection_12/Write") == "other"


def test_cli_flags_after_the_separator_are_the_clis():
    assert split_cli_flags(["/a", "--no-anchor", "--", "--no-series-tables", "--format",
                            "parquet"]) == (["/a", "--no-anchor"],
                                            ["--no-series-tables", "--format", "parquet"])
    assert split_cli_flags(["/a", "--workers", "4"]) == (["/a", "--workers", "4"], [])
