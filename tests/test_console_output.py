"""What a run prints: the tool's own lines only, whatever Beam and its dependencies would
say (README, "Command line"); ``--verbose`` brings theirs back. Importing the project
prints and changes nothing."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from importlib.metadata import requires

import pytest

from tests.conftest import copy_pydicom_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# An SDK worker process: where Beam's start-up and INFO lines would come from.
WORKERS = ("--direct_running_mode=multi_processing", "--direct_num_workers=1")


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("samples")
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        copy_pydicom_file(name, folder)
    return folder


def run_cli(*args):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    result = subprocess.run([sys.executable, "-m", "beam_pipeline", *map(str, args)],
                            capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def fragments(stderr: str) -> list[str]:
    """stderr's lines, the progress bar's redraws (carriage returns) apart."""
    return [part.strip() for part in re.split(r"[\r\n]", stderr) if part.strip()]


def test_a_default_run_prints_only_its_progress_bar_and_summary(samples, tmp_path):
    stderr = run_cli(samples, "-o", tmp_path / "out.csv", *WORKERS)
    foreign = [part for part in fragments(stderr)
               if not part.startswith(("DICOM files", "Matched 3 files in "))]
    assert foreign == [], stderr
    assert "every matched file is accounted for" in stderr


def test_a_quiet_run_prints_nothing(samples, tmp_path):
    assert run_cli(samples, "-o", tmp_path / "out.csv", "--quiet") == ""


def test_a_quiet_incremental_run_over_an_archive_prints_nothing(samples, tmp_path):
    """Every step such a run builds (reuse, archive members) passes Beam's checks
    silently: Beam warns on construction about a ``process`` with yield and return."""
    import zipfile

    inputs = tmp_path / "in"
    inputs.mkdir()
    with zipfile.ZipFile(inputs / "scans.zip", "w") as archive:
        for path in sorted(samples.iterdir()):
            archive.write(path, path.name)
    copy_pydicom_file("CT_small.dcm", inputs)
    for _ in range(2):  # the second run reuses the first one's state
        assert run_cli(inputs, "-o", tmp_path / "out.csv", "--quiet", "--incremental") == ""


def test_verbose_brings_beams_own_lines_back(samples, tmp_path):
    stderr = run_cli(samples, "-o", tmp_path / "out.csv", "--quiet", "--verbose")
    assert re.search(r"^INFO:apache_beam\.", stderr, re.M), stderr[-3000:]


def test_the_plain_install_brings_what_beams_import_needs():
    """``import apache_beam`` logs "crcmod package not found" without Beam's tfrecord
    extra: the plain install (README command 1, no extras) must bring it."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.keyword) and node.arg == "install_requires")
    beam = [item.value for item in call.value.elts if item.value.startswith("apache-beam")]
    assert beam == ["apache-beam[tfrecord]==2.70.0"]
    assert any(line.startswith("crcmod") and 'extra == "tfrecord"'
               for line in requires("apache-beam")), requires("apache-beam")
    import crcmod  # pylint: disable=unused-import,import-outside-toplevel  # installed here too


def test_importing_the_project_changes_nothing():
    """Its dependencies may (Beam's own warning filters); the project's packages do not."""
    code = (
        "import logging, os, sys, warnings\n"
        "import apache_beam, pydicom, pyarrow.parquet, yaml, tqdm\n"
        "filters = list(warnings.filters)\n"
        "environ = dict(os.environ)\n"
        "import beam_pipeline, beam_pipeline.cli, beam_pipeline.arguments, beam_pipeline.launch\n"
        "import transforms.reading.extract\n"
        "assert list(warnings.filters) == filters, 'warning filters changed'\n"
        "assert dict(os.environ) == environ, 'environment changed'\n"
        "assert not logging.getLogger().filters, 'a root logging filter was added'\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_verbose_is_read_before_beam_also_from_the_config_file(tmp_path):
    from beam_pipeline.cli import console_flags

    config = tmp_path / "run.yaml"
    config.write_text("verbose: true\nformat: parquet\n")
    assert console_flags(["in", "--config", str(config)]).verbose is True
    assert console_flags(["in", f"--config={config}", "--quiet"]).quiet is True
    assert console_flags(["in", "--verbose"]).verbose is True
    assert console_flags(["in", "--config", str(tmp_path / "missing.yaml")]).verbose is False
    assert console_flags(["in"]).verbose is False
