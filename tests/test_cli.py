"""The command line: bad input stops with one clear line and exit 2, before any work."""

from __future__ import annotations

import json
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

    from beam_pipeline import cli as cli_module

    copy_pydicom_file("CT_small.dcm", tmp_path / "in", "a.dcm")
    copy_pydicom_file("CT_small.dcm", tmp_path / "in", "b")
    copy_pydicom_file("CT_small.dcm", tmp_path / "in" / "sub", "c.dcm")

    def mode(*extra):
        _, options, _ = cli_module.parse([str(tmp_path / "in"), "-o", str(tmp_path / "o.csv"),
                                          *extra])
        direct = options.view_as(DirectOptions)
        return direct.direct_running_mode, direct.direct_num_workers

    monkeypatch.setattr(cli_module, "MULTI_PROCESS_FROM_FILES", 4)
    assert mode() == ("in_memory", 1)
    monkeypatch.setattr(cli_module, "MULTI_PROCESS_FROM_FILES", 3)
    assert mode() == ("multi_processing", 0)
    # What the user asks for wins.
    assert mode("--direct_running_mode=multi_threading") == ("multi_threading", 1)
    monkeypatch.setattr(cli_module, "MULTI_PROCESS_FROM_FILES", 4)
    assert mode("--direct_num_workers=2") == ("in_memory", 2)
