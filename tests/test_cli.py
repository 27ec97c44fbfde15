"""The command line: bad input stops with one clear line and exit 2, before any work."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys

import pytest

from tests.conftest import copy_pydicom_file

NO_DAC = "-dac_override,-dac_read_search"


def cli(*args, as_unprivileged=False, console_script=False):
    command = (["dicom-meta-extract"] if console_script
               else [sys.executable, "-m", "beam_pipeline"]) + [str(a) for a in args]
    if as_unprivileged and os.geteuid() == 0:
        # root may write anywhere; without the DAC capabilities it obeys file modes.
        command = ["setpriv", f"--bounding-set={NO_DAC}", f"--inh-caps={NO_DAC}"] + command
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture
def archive(tmp_path):
    copy_pydicom_file("CT_small.dcm", tmp_path / "in")
    return tmp_path / "in"


def assert_usage_error(result, fragment, folder):
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dicom-meta-extract: error:")
    assert fragment in lines[0]
    assert not [name for name in os.listdir(folder) if name.startswith(("out", ".out"))]


def test_missing_input(tmp_path):
    result = cli(tmp_path / "nowhere", "-o", tmp_path / "out.csv")
    assert_usage_error(result, "does not exist", tmp_path)


def test_glob_matching_nothing(tmp_path):
    result = cli(str(tmp_path / "*.dcm"), "-o", tmp_path / "out.csv")
    assert_usage_error(result, "matches no file", tmp_path)


def test_missing_output(archive, tmp_path):
    assert_usage_error(cli(archive), "no output given", tmp_path)


def test_output_folder_missing(archive, tmp_path):
    result = cli(archive, "-o", tmp_path / "no" / "such" / "out.csv")
    assert_usage_error(result, "does not exist", tmp_path)


@pytest.mark.parametrize("exists", [True, False])
def test_output_naming_a_folder(archive, tmp_path, exists):
    """``-o out/`` names a folder, not a table, whether or not it exists yet."""
    folder = tmp_path / "out"
    if exists:
        folder.mkdir()
    result = cli(archive, "-o", f"{folder}/")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dicom-meta-extract: error:"), result.stderr
    assert f"is a directory; name a file such as {folder}/scan.csv, or write the nested" \
        in lines[0]
    assert os.listdir(folder) == [] if exists else not folder.exists()


def test_unwritable_output_folder(archive, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    result = cli(archive, "-o", locked / "out.csv", as_unprivileged=True)
    assert_usage_error(result, "is not writable", locked)


def test_unknown_option(archive, tmp_path):
    result = cli(archive, "-o", tmp_path / "out.csv", "--no-such-option=1")
    assert_usage_error(result, "--no-such-option", tmp_path)


def test_bad_option_value(archive, tmp_path):
    result = cli(archive, "-o", tmp_path / "out.csv", "--max-sequence-items", "-3")
    assert_usage_error(result, "--max-sequence-items", tmp_path)


def test_unknown_option_in_config(archive, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("no_such_beam_option: 3\n")
    result = cli(archive, "-o", tmp_path / "out.csv", "--config", config)
    assert_usage_error(result, "no_such_beam_option", tmp_path)


def test_console_script_runs_with_config_and_overrides(archive, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("max_binary_bytes: 1\nrunner: DirectRunner\n")
    out = tmp_path / "out.csv"
    result = cli(archive, "-o", out, "--config", config, "--max-binary-bytes", "4",
                 console_script=True)
    assert result.returncode == 0, result.stderr
    assert "every matched file is accounted for" in result.stderr
    assert "DICOM files" in result.stderr  # the progress bar
    assert "Discarding unparseable args" not in result.stderr  # "--config FILE" is ours
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["rows"] == 1 and summary["accounted_for"]
    header = out.read_text().splitlines()[0]
    # Overridden to 4 bytes on the command line: the 2-byte version is hex, not "<N bytes>".
    assert "File Meta Information Version (0002,0001)" in header
    row = out.read_text().splitlines()[1]
    assert ",0001," in row


def test_local_default_is_chosen_by_archive_size(tmp_path, monkeypatch):
    from apache_beam.options.pipeline_options import DirectOptions

    from beam_pipeline import local_runner
    from beam_pipeline.arguments import parse

    copy_pydicom_file("CT_small.dcm", tmp_path / "in", "a.dcm")
    copy_pydicom_file("CT_small.dcm", tmp_path / "in", "b")
    copy_pydicom_file("CT_small.dcm", tmp_path / "in" / "sub", "c.dcm")

    def mode(*extra):
        _, options, _ = parse([str(tmp_path / "in"), "-o", str(tmp_path / "o.csv"), *extra])
        direct = options.view_as(DirectOptions)
        return direct.direct_running_mode, direct.direct_num_workers

    monkeypatch.setattr(local_runner.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(local_runner, "MULTI_PROCESS_FROM_FILES", 4)
    assert mode() == ("in_memory", 1)
    monkeypatch.setattr(local_runner, "MULTI_PROCESS_FROM_FILES", 3)
    assert mode() == ("multi_processing", 0)
    # One core: worker processes would only add their start-up.
    monkeypatch.setattr(local_runner.os, "cpu_count", lambda: 1)
    assert mode() == ("in_memory", 1)
    monkeypatch.setattr(local_runner.os, "cpu_count", lambda: 2)
    # What the user asks for wins.
    assert mode("--direct_running_mode=multi_threading") == ("multi_threading", 1)
    monkeypatch.setattr(local_runner, "MULTI_PROCESS_FROM_FILES", 4)
    assert mode("--direct_num_workers=2") == ("in_memory", 2)


def help_text(*flags, columns=80):
    env = {**os.environ, "COLUMNS": str(columns)}
    result = subprocess.run([sys.executable, "-m", "beam_pipeline", *flags],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_fits_two_screens_and_lists_every_option_we_declare():
    import argparse

    from beam_pipeline.short_help import own_option_classes
    from transforms.common.beam_internals import add_option_arguments

    text = help_text("--help")
    lines = text.splitlines()
    assert len(lines) <= 100, len(lines)
    assert lines[0].startswith("usage: dicom-meta-extract INPUT...")
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert text.count("dicom-meta-extract /") + text.count("dicom-meta-extract gs://") >= 2
    classes = own_option_classes()
    assert {cls.__name__ for cls in classes} >= {"DicomExtractOptions", "StorageOptions"}
    declared = []
    for cls in classes:
        parser = argparse.ArgumentParser(add_help=False)
        add_option_arguments(cls, parser)
        declared += [action.option_strings for action in parser._actions]
    assert len(declared) >= 8
    for names in declared:
        assert any(re.search(rf"(^|[ ,]){re.escape(name)}\b", text, re.M) for name in names), names
    for ours in ("--config", "--quiet", "--help-beam", "INPUT"):
        assert ours in text
    assert "--runner" not in text and "--flink_master" not in text  # Beam's are behind a flag


def test_help_beam_lists_beams_options_and_they_are_still_accepted(archive, tmp_path):
    text = help_text("--help-beam")
    for option in ("--runner", "--flink_master", "--temp_location", "--include-private"):
        assert option in text
    result = cli(archive, "-o", tmp_path / "out.csv", "--quiet", "--runner=DirectRunner",
                 "--direct_num_workers=1", "--job_name=help-probe")
    assert result.returncode == 0, result.stderr


def test_a_new_option_appears_in_help_by_itself():
    """The help is built from the declarations: an option class added anywhere shows up."""
    code = (
        "import sys\n"
        "from apache_beam.options.pipeline_options import PipelineOptions\n"
        "class LimitsOptions(PipelineOptions):\n"
        "    @classmethod\n"
        "    def _add_argparse_args(cls, parser):\n"
        "        parser.add_argument('--max-files-probe', type=int, default=7,\n"
        "                            help='Stop after this many files. More text here.')\n"
        "from beam_pipeline.cli import main\n"
        "main(['--help'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert "Limits:" in result.stdout
    assert re.search(r"--max-files-probe N +Stop after this many files \[default: 7\]",
                     result.stdout), result.stdout


def test_summary_paragraph_names_the_report(archive, tmp_path):
    result = cli(archive, "-o", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr
    assert f"Report: {tmp_path / 'out.report.html'}" in result.stderr
    assert (tmp_path / "out.report.html").exists()


def test_main_writes_to_the_streams_it_is_given(tmp_path):
    """The CLI's output streams are injectable: usage errors, help and the summary."""
    import io

    from beam_pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    assert main([str(tmp_path / "nowhere"), "-o", str(tmp_path / "out.csv")], out, err) == 2
    assert err.getvalue().count("\n") == 1 and "does not exist" in err.getvalue()
    assert out.getvalue() == ""
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exited:
        main(["--help"], out, err)
    assert exited.value.code == 0
    assert out.getvalue().startswith("usage: dicom-meta-extract") and err.getvalue() == ""
    copy_pydicom_file("CT_small.dcm", tmp_path / "in")
    out, err = io.StringIO(), io.StringIO()
    assert main([str(tmp_path / "in"), "-o", str(tmp_path / "out.csv")], out, err) == 0
    assert "every matched file is accounted for" in err.getvalue()
    assert "DICOM files" in err.getvalue()  # the progress bar, on the given stream
    assert out.getvalue() == ""
