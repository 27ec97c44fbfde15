"""Parquet next to CSV: output size and the time Parquet adds to a run.

    python benchmarks/parquet_vs_csv.py [--files 3000] [--repeat 2] [--workdir DIR]

Generates an archive of ``--files`` DICOM files with pydicom (copies of pydicom's bundled
CT, MR and RT files with their UIDs, dates, times, positions and patient changed, so
values vary as in a real archive), then runs the CLI in a fresh process with
``--format csv``, ``--format csv,parquet`` and ``--format parquet`` and prints sizes and
wall times, as ratios to the CSV run. Each timing is the best of ``--repeat`` runs, the formats taking turns.
Standalone on purpose: it only needs the CLI and pydicom.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import pydicom
import pydicom.data
from pydicom.uid import generate_uid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_FILES = os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")
TEMPLATES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "liver_1frame.dcm"]


def generate_archive(folder: str, count: int, seed: int = 6) -> None:
    rng = random.Random(seed)
    templates = [pydicom.dcmread(os.path.join(TEST_FILES, name)) for name in TEMPLATES]
    start = datetime.date(2015, 1, 1)
    for index in range(count):
        dataset = templates[index % len(templates)]
        study = index // 50
        day = start + datetime.timedelta(days=study % 3000)
        dataset.PatientID = f"P{study:06d}"
        dataset.StudyDate = dataset.SeriesDate = day.strftime("%Y%m%d")
        dataset.StudyTime = f"{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
        dataset.ContentTime = dataset.StudyTime + f".{rng.randrange(10**6):06d}"
        dataset.AcquisitionDateTime = dataset.StudyDate + dataset.ContentTime
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.InstanceNumber = index
        if "ImagePositionPatient" in dataset:
            dataset.ImagePositionPatient = [round(rng.uniform(-200, 200), 3) for _ in range(3)]
        if "SliceLocation" in dataset:
            dataset.SliceLocation = round(rng.uniform(-200, 200), 3)
        subfolder = os.path.join(folder, f"study{study:05d}")
        os.makedirs(subfolder, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset.save_as(os.path.join(subfolder, f"{index:07d}.dcm"))


def run_cli(archive: str, output: str, fmt: str) -> float:
    env = dict(os.environ, PYTHONPATH=REPO)
    command = [sys.executable, "-m", "beam_pipeline", archive, "-o", output,
               "--format", fmt, "--quiet"]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=REPO)
    return time.perf_counter() - started


FORMATS = {"csv": "csv.csv", "csv,parquet": "both.csv", "parquet": "pq.parquet"}


def best_times(repeat: int, archive: str, out: str) -> dict:
    """Best wall time per format; formats alternate within each round so that drift
    (caches, other load) falls on all of them alike. One untimed warm-up run first."""
    run_cli(archive, os.path.join(out, "warmup.csv"), "csv")
    times: dict = {fmt: [] for fmt in FORMATS}
    for _ in range(repeat):
        for fmt, name in FORMATS.items():
            times[fmt].append(run_cli(archive, os.path.join(out, name), fmt))
    return {fmt: min(seconds) for fmt, seconds in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", help="Kept after the run if given.")
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="parquet-bench-")
    try:
        archive = os.path.join(workdir, "archive")
        if not os.path.isdir(archive):
            generate_archive(archive, args.files)
        out = os.path.join(workdir, "out")
        os.makedirs(out, exist_ok=True)
        times = best_times(args.repeat, archive, out)
        csv_seconds, both_seconds = times["csv"], times["csv,parquet"]
        parquet_seconds = times["parquet"]
        csv_bytes = os.path.getsize(os.path.join(out, "both.csv"))
        parquet_bytes = os.path.getsize(os.path.join(out, "both.parquet"))
        print(f"archive: {args.files} files, best of {args.repeat} runs each")
        print(f"size   CSV {csv_bytes / 1e6:9.2f} MB   Parquet {parquet_bytes / 1e6:9.2f} MB"
              f"   Parquet/CSV = {parquet_bytes / csv_bytes:.3f}")
        print(f"time   --format csv          {csv_seconds:7.2f} s   1.00 x")
        print(f"time   --format csv,parquet  {both_seconds:7.2f} s   {both_seconds / csv_seconds:.2f} x"
              f"   (Parquet adds {both_seconds - csv_seconds:+.2f} s)")
        print(f"time   --format parquet      {parquet_seconds:7.2f} s   "
              f"{parquet_seconds / csv_seconds:.2f} x")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
