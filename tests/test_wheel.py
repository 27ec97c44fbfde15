"""An install from a built wheel runs the pipeline: every package is in it (Dataflow
stages the same list with --setup_file), and nothing depends on the source checkout."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import sysconfig
import zipfile

from conftest import copy_pydicom_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_install_runs_the_pipeline(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), ROOT], check=True, timeout=300)
    (wheel,) = wheels.glob("dicom_meta_extract-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {os.path.dirname(name) for name in archive.namelist()
                   if name.endswith("/__init__.py")}
    on_disk = {os.path.relpath(root, ROOT) for package in ("beam_pipeline", "transforms")
               for root, _dirs, files in os.walk(os.path.join(ROOT, package))
               if "__init__.py" in files}
    assert shipped == on_disk

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", "--target", str(site), str(wheel)], check=True, timeout=300)
    inputs = tmp_path / "in"
    copy_pydicom_file("CT_small.dcm", inputs)
    copy_pydicom_file("MR_small.dcm", inputs)
    (tmp_path / "out").mkdir()
    # -S: no site-packages processing, so the checkout's editable install (a .pth file)
    # cannot shadow the wheel; the dependencies come from site-packages as a plain path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])}
    where = subprocess.run(
        [sys.executable, "-S", "-c", "import transforms.reading.extract as m; print(m.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(site))
    result = subprocess.run(
        [sys.executable, "-S", "-m", "beam_pipeline", str(inputs), "-o",
         str(tmp_path / "out" / "scan.csv"), "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out" / "scan.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(os.path.basename(row["DicomPath"]) for row in rows) == [
        "CT_small.dcm", "MR_small.dcm"]
