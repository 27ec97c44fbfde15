"""scan.report.html: written by every run, self-contained, escaped, and right in a browser.

The pages are rendered by a real headless Chromium (installed by .ci/install); the figures
are read back from the DOM after the page's script ran and compared with summary.json
and with the CSV read independently here.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter

import pytest
from PIL import Image
from pydicom.uid import UID

from beam_pipeline.launch import describe
from tests.browser import Elements, dump_dom, screenshot
from tests.conftest import make_dataset, pydicom_file, read_csv, run_cli, write_dicom
from transforms.report.series_section import FIGURES
from transforms.report.html_report import write_html_report
from transforms.report.summary import OutputPaths
from transforms.output.counters import DistinctCount, ValueCounts
from transforms.output.table_stats import column_of

INJECTED = "<script>document.title=1</script><img src=x onerror=alert(1)>"
HOSTILE_NAME = '<img src=x onerror=alert(1)>&amp;.dcm'
MR, CT = "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    files = [  # patient, study, series, modality, manufacturer, model, date, name
        ("P1", "1.9.1", "1.9.1.1", "CT", "SIEMENS", "Definition", "20230115", "a.dcm"),
        ("P1", "1.9.1", "1.9.1.1", "CT", "SIEMENS", "Definition", "20230115", "b.dcm"),
        ("P1", "1.9.1", "1.9.1.2", "CT", "SIEMENS", "Definition", "20230115", "c.dcm"),
        ("P1", "1.9.2", "1.9.2.1", "MR", "GE MEDICAL SYSTEMS", "Signa", "20230320", "d.dcm"),
        ("P2", "1.9.3", "1.9.3.1", "MR", "GE MEDICAL SYSTEMS", "Signa", "20220101", "e.dcm"),
        ("P3", "1.9.4", "1.9.4.1", "MR", INJECTED, '"><svg onload=alert(2)>', "20221231",
         "f.dcm"),
    ]
    for patient, study, series, modality, manufacturer, model, date, name in files:
        write_dicom(root / patient / study / name, make_dataset(
            PatientID=patient, StudyInstanceUID=study, SeriesInstanceUID=series,
            Modality=modality, SOPClassUID=MR if modality == "MR" else CT,
            Manufacturer=manufacturer, ManufacturerModelName=model, StudyDate=date))
    data = open(pydicom_file("CT_small.dcm"), "rb").read()
    (root / "truncated.dcm").write_bytes(data[:1000])
    (root / HOSTILE_NAME).write_bytes(data[:1000])  # an error whose path is shown
    (root / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + os.urandom(200))
    (root / "notes.txt").write_text("not DICOM\n")
    (root / "<b>skip<i>.txt").write_text("not DICOM either\n")
    return root


@pytest.fixture(scope="module")
def run(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "scan.csv"
    assert run_cli(archive, "-o", out, "--quiet", "--format", "csv,parquet") == 0
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    return out, summary


@pytest.fixture(scope="module")
def rendered(run):
    out, _ = run
    dom, console = dump_dom(str(out.with_suffix(".report.html")))
    return Elements(dom), console


def expected_from_csv(path) -> dict:
    header, rows = read_csv(path)
    distinct = {key: len({row[column_of(keyword)] for row in rows if row.get(column_of(keyword))})
                for key, keyword in (("patients", "PatientID"), ("studies", "StudyInstanceUID"),
                                     ("series", "SeriesInstanceUID"))}
    modalities = Counter(row[column_of("Modality")] for row in rows if row[column_of("Modality")])
    return {"header": header, "rows": rows, "distinct": distinct, "modalities": modalities}


def chart(page: Elements, name: str) -> dict[str, int]:
    """Bars of the chart ``name`` as {label: count}, from the rendered DOM."""
    bars, inside = {}, False
    for tag, attrs in page.elements:
        if tag == "svg":
            inside = attrs.get("data-chart") == name
        elif inside and tag == "g" and "data-count" in attrs:
            bars[attrs["data-label"]] = int(attrs["data-count"])
    return bars


def test_every_run_writes_the_report_next_to_the_table(run):
    out, summary = run
    report = out.with_suffix(".report.html")
    assert summary["report_file"] == str(report) and report.exists()
    assert str(report) in describe(summary)


def test_repeated_bundles_write_the_same_report(run, tmp_path):
    """Retries: the report step's bundle runs twice; the page is whole, with the same figures,
    and no temporary file is left."""
    import shutil

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    from transforms.report.html_report import WriteHtmlReport

    out, summary = run
    for suffix in (".csv", ".errors.csv", ".skipped.csv"):
        shutil.copyfile(out.with_suffix(suffix), tmp_path / ("scan" + suffix))
    paths = OutputPaths.for_output(str(tmp_path / "scan.csv"), "test")
    options = PipelineOptions(["--direct_runner_bundle_repeat=1"])
    with beam.Pipeline(runner=fn_runner.FnApiRunner(), options=options) as pipeline:
        _ = (pipeline | beam.Create([summary])
             | WriteHtmlReport(paths, {"runner": "test", "inputs": [], "options": {}}))
    page = Elements((tmp_path / "scan.report.html").read_text(encoding="utf-8"))
    first = Elements(out.with_suffix(".report.html").read_text(encoding="utf-8"))
    # The series section's figures come from the series tables' step, not re-run here.
    expected = {key: value for key, value in first.figures().items() if key not in FIGURES}
    assert page.figures() == expected
    assert [name for name in os.listdir(tmp_path) if "partial" in name] == []


def test_the_page_is_self_contained(run):
    page = run[0].with_suffix(".report.html").read_text(encoding="utf-8")
    elements = Elements(page)
    for tag, attrs in elements.elements:
        assert tag not in ("link", "img", "iframe", "object", "embed"), tag
        for name in ("src", "href", "action", "srcset", "data"):
            assert name not in attrs or attrs[name].startswith("#"), (tag, name)
    assert not re.search(r"url\(|@import|https?://(?!www\.w3\.org)", "".join(
        elements.text.split(INJECTED)))  # the archive's own values may hold anything
    policy = [attrs for attrs in elements.tags("meta")
              if attrs.get("http-equiv") == "Content-Security-Policy"]
    assert policy and "default-src 'none'" in policy[0]["content"]


def test_figures_in_the_browser_match_the_summary_and_the_csv(run, rendered):
    out, summary = run
    page, console = rendered
    assert console == []
    figures = page.figures()
    for key in ("files_matched", "rows", "errors", "non_dicom_skipped", "columns"):
        assert int(figures[key]) == summary[key], key
    assert figures["accounted_for"] == "true" and summary["accounted_for"]
    assert (summary["files_matched"], summary["rows"], summary["errors"],
            summary["non_dicom_skipped"]) == (11, 6, 3, 2)
    expected = expected_from_csv(out)
    for key, count in expected["distinct"].items():
        assert int(figures[key]) == count, key
    assert expected["distinct"] == {"patients": 3, "studies": 4, "series": 5}
    assert int(figures["table_columns"]) == len(expected["header"]) == summary["columns"]
    assert chart(page, "modality") == dict(expected["modalities"]) == {"CT": 3, "MR": 3}
    assert chart(page, "SOP class") == {UID(CT).name: 3, UID(MR).name: 3}
    errors = chart(page, "errors")
    assert errors["Truncated"] == 2 and sum(errors.values()) == summary["errors"]
    assert chart(page, "skips") == {"no DICOM preamble and no DICOM element at the start": 2}
    assert chart(page, "manufacturer") == {"SIEMENS": 3, "GE MEDICAL SYSTEMS": 2, INJECTED: 1}
    years = chart(page, "files by study year")
    assert years == {"2022": 2, "2023": 4}
    months = chart(page, "files by study month")  # the span is short: months too
    assert months["2023-01"] == 3 and months["2022-12"] == 1 and months["2022-06"] == 0
    # The filter script ran: it counted the column rows it shows.
    assert page.tags("body")[0].get("data-script") == "ran"
    shown = [attrs for attrs in page.elements if attrs[1].get("id") == "column-shown"]
    assert int(shown[0][1]["data-value"]) == len(expected["header"])


def test_values_and_paths_from_the_archive_are_text_not_markup(rendered):
    page, console = rendered
    assert console == []
    assert len(page.tags("script")) == 1  # ours
    assert page.tags("img") == [] and [a for a in page.tags("svg") if "onload" in a] == []
    assert not any(name.startswith("on") for _, attrs in page.elements for name in attrs)
    assert INJECTED in page.text  # shown literally
    assert page.tags("b") == []
    sample = [cell for cell in page.texts if cell.endswith(HOSTILE_NAME)]
    assert sample, "the hostile path is shown, as text, in the error sample"


def test_the_page_renders_to_a_non_trivial_png(run, tmp_path):
    png = tmp_path / "report.png"
    console = screenshot(str(run[0].with_suffix(".report.html")), str(png))
    assert console == []
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 6000)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 200  # text, charts and cards, not a blank page
    # The outcome bar's green, the errors' red and the bars' blue are drawn.
    present = {color for _, color in colors}
    for wanted in ((0x16, 0xA3, 0x4A), (0xDC, 0x26, 0x26), (0x25, 0x63, 0xEB)):
        assert wanted in present, wanted


def test_a_script_error_would_be_caught(tmp_path):
    """The console check can fail: a page with a JavaScript error is reported."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>noSuchFunction();</script></body></html>")
    _, console = dump_dom(str(page))
    assert any("noSuchFunction" in message for message in console), console


def test_report_of_a_parquet_only_run_matches_the_csv_run(archive, run, rendered, tmp_path):
    out = tmp_path / "scan.parquet"
    assert run_cli(archive, "-o", out, "--quiet", "--format", "parquet") == 0
    summary = json.loads((tmp_path / "scan.summary.json").read_text())
    report = tmp_path / "scan.report.html"
    assert summary["report_file"] == str(report)
    page = Elements(report.read_text(encoding="utf-8"))
    csv_page, _ = rendered
    for key in ("patients", "studies", "series", "rows", "table_columns"):
        assert page.figures()[key] == csv_page.figures()[key], key
    for name in ("modality", "SOP class", "manufacturer", "files by study year"):
        assert chart(page, name) == chart(csv_page, name), name
    assert "scan.parquet" in page.text


def test_report_shows_the_written_table_not_the_source(run, tmp_path):
    """De-identified runs write de-identified rows; the page is computed from those rows
    alone, so a value that is only in the source files can never reach it."""
    out, summary = run
    header, rows = read_csv(out)
    table = tmp_path / "scan.csv"
    manufacturer = column_of("Manufacturer")
    with open(table, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, header, lineterminator="\r\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, manufacturer: "REMOVED" if row[manufacturer] else ""})
    paths = OutputPaths.for_output(str(table), "test")
    summary = {**summary, "table": str(table), "tags": ["PatientID", "Modality"],
               "exclude_tags": None,
               "deidentification": {"profile": "Basic Application Level Confidentiality Profile",
                                    "options": [{"option": "Retain UIDs", "code": "113110"}]}}
    write_html_report(summary, paths, {"runner": "test", "inputs": [], "options": {}})
    page = Elements(open(paths.report, encoding="utf-8").read())
    assert set(chart(page, "manufacturer")) == {"REMOVED"}
    assert "SIEMENS" not in page.text
    # What was selected is shown, whatever its shape.
    assert page.figures()["deidentified"] == "true"
    assert "De-identified table: Basic Application Level Confidentiality Profile" in page.text
    assert "Retain UIDs" in page.text and "113110" in page.text
    assert "exclude_tags" in page.text and "(not set)" in page.text
    assert "Only the selected elements are in the table: PatientID, Modality" in page.text


def test_value_counts_stay_bounded_and_keep_the_total():
    counts = ValueCounts(cap=10)
    for value in range(1000):
        counts.add(f"v{value}", 1 + (value == 7) * 5000)
    assert len(counts.counts) <= 20 and counts.approximate
    assert counts.total() == 1000 + 5000
    assert counts.most_common(1) == [("v7", 5001)]


def test_distinct_counts_exact_then_estimated():
    import pyarrow as pa

    exact = DistinctCount(exact_limit=1_000_000)
    sketch = DistinctCount(exact_limit=1000)
    for start in range(0, 200_000, 10_000):
        batch = pa.array([f"1.2.3.{n % 150_000}" for n in range(start, start + 10_000)])
        exact.add_array(batch)
        sketch.add_array(batch)
    assert exact.count() == 150_000 and not exact.estimated
    small = DistinctCount()
    small.add_array(pa.array(["a", "b", None, "a"]))
    assert small.count() == 2 and not small.estimated
    assert sketch.estimated and abs(sketch.count() - 150_000) / 150_000 < 0.03


def test_counters_counted_apart_merge_as_data():
    """Counted on several workers (stable hashes), sent as data, merged in any order:
    the counts of one counter that saw everything (shard_stats.py)."""
    import pyarrow as pa

    batches = [pa.array([f"1.2.3.{n % 150_000}" for n in range(start, start + 50_000)])
               for start in range(0, 200_000, 50_000)]
    for limit, estimated in ((1_000_000, False), (1000, True)):
        apart = []
        for batch in batches:
            counter = DistinctCount(exact_limit=limit, stable=True)
            counter.add_array(batch)
            apart.append(counter.as_data())
        for order in (apart, apart[::-1]):
            merged = DistinctCount.from_data(order[0])
            for data in order[1:]:
                merged.merge(DistinctCount.from_data(data))
            assert merged.estimated is estimated
            assert abs(merged.count() - 150_000) / 150_000 < (0.03 if estimated else 1e-9)
    left, right = ValueCounts(cap=10), ValueCounts(cap=10)
    for value in range(30):
        (left if value % 2 else right).add(f"v{value}", 100 + value)
    merged = ValueCounts.from_data(left.as_data())
    merged.merge(ValueCounts.from_data(right.as_data()))
    assert merged.total() == sum(100 + value for value in range(30))
    assert merged.most_common(2) == [("v29", 129), ("v28", 128)]


def test_a_row_larger_than_the_first_block_is_read(tmp_path):
    """The CSV pass starts with 1 MiB blocks and starts over with larger ones if needed."""
    from transforms.output.table_stats import scan_csv

    table = tmp_path / "wide.csv"
    modality = column_of("Modality")
    with open(table, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\r\n")
        writer.writerow(["DicomPath", modality, "Big (0011,0010)"])
        writer.writerow(["/a", "CT", "x" * (3 << 20)])
        writer.writerow(["/b", "MR", ""])
    stats = scan_csv(str(table)).as_dict()
    assert stats["rows"] == 2
    assert stats["fill"] == [("DicomPath", 2), (modality, 2), ("Big (0011,0010)", 1)]
    assert stats["distributions"]["modality"]["counts"] == [("CT", 1), ("MR", 1)]
