"""Peak memory and time of the HTML report step on a large generated table.

    python -m benchmarks.report_memory /tmp/report-bench --rows 10000000 [--also 1000000]
        [--parquet]

Writes ``scan.csv`` of ``--rows`` rows (unless it is already there with that many rows):
48 realistic columns of a CT/MR/CR archive, the CLI's column names and DICOM text, one
row per file sorted by ``DicomPath``; 100 files per patient, 2 studies of 5 series of
10 images each, so 10 million rows hold 100,000 patients, 200,000 studies and a
million series. Columns are generated with pyarrow compute, so writing 10 million rows
takes minutes, not hours.

Then, each in a fresh process, one after the other in this command:
  (anchor) a bare streaming read of the table (``pyarrow.csv.open_csv``, every column a
           string, the report's block size, each batch dropped): the floor of any
           streaming pass, with the same imports loaded;
  (report) the report step itself (``transforms.report.html_report.write_html_report``): the
           streaming statistics, reading errors/skips, rendering and writing the page.
Peak RSS is the child's own ``VmHWM`` (its peak resident set, Python, Beam and pyarrow
included; "of which imports" is the peak before the work started); seconds are the wall
time of the work after imports, CPU s its user + sys. ``--also N`` measures the report
step on the first N rows too (a second table), to show memory does not follow the row
count. ``--parquet`` also writes the table as Parquet (dates typed as the output types
them) and measures a Parquet-only run's report (``ParquetFile.iter_batches``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 200_000
ROOT_UID = "1.2.826.0.1.3680043.8.498."


def _col(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    from transforms.reading.naming import public_name

    return public_name(tag_for_keyword(keyword))


def _text(values) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _pick(choices, index: np.ndarray) -> pa.Array:
    return pc.take(pa.array(choices, pa.string()), pa.array(index % len(choices)))


def generate_batch(start: int, count: int) -> pa.Table:
    i = np.arange(start, start + count, dtype=np.int64)
    instance, series, study, patient = i % 10 + 1, i // 10, i // 50, i // 100
    rng = np.random.default_rng(start)
    mixed = (study * 2654435761) % 1000  # per-study pseudo-random choice
    modality_index = np.where(mixed < 550, 0, np.where(mixed < 900, 1, 2))
    modality = _pick(["CT", "MR", "CR"], modality_index)
    sop_class = _pick(["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4",
                       "1.2.840.10008.5.1.4.1.1.1"], modality_index)
    vendor = (patient * 40503) % 7
    manufacturer = _pick(["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "TOSHIBA", "SIEMENS",
                          "GE MEDICAL SYSTEMS", "Agfa"], vendor)
    model = _pick(["SOMATOM Definition AS", "Optima CT660", "Ingenia", "Aquilion ONE",
                   "Skyra", "Discovery MR750", "DX-D 100"], vendor)
    syntax = _pick(["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.90",
                    "1.2.840.10008.1.2.1"], mixed // 250)
    year = 2005 + (study % 20)
    month = 1 + (study // 20) % 12
    day = 1 + (study // 240) % 28
    study_date = _text(year * 10000 + month * 100 + day)
    study_uid = _join(pa.scalar(ROOT_UID + "1."), _text(study))
    series_uid = _join(pa.scalar(ROOT_UID + "2."), _text(series))
    instance_uid = _join(pa.scalar(ROOT_UID + "3."), _text(i))
    patient_id = _join(pa.scalar("PID"), _text(patient + 1_000_000))
    path = _join(pa.scalar("/archive/"), patient_id, pa.scalar("/"), _text(study + 10_000_000),
                 pa.scalar("/"), _text(series + 100_000_000), pa.scalar("/IM"),
                 _text(instance + 1000), pa.scalar(".dcm"))
    position = _join(pa.scalar("-125.000\\-125.000\\"), _text(np.round(
        rng.uniform(-400, 100, count), 3)))
    columns = {
        "DicomPath": path,
        _col("FileMetaInformationGroupLength"): _text(np.full(count, 196)),
        _col("FileMetaInformationVersion"): pa.array(["0001"] * count),
        _col("MediaStorageSOPClassUID"): sop_class,
        _col("MediaStorageSOPInstanceUID"): instance_uid,
        _col("TransferSyntaxUID"): syntax,
        _col("ImplementationClassUID"): pa.array(["1.2.276.0.7230010.3.0.3.6.4"] * count),
        _col("ImplementationVersionName"): pa.array(["OFFIS_DCMTK_364"] * count),
        _col("SpecificCharacterSet"): pa.array(["ISO_IR 100"] * count),
        _col("ImageType"): _pick(["ORIGINAL\\PRIMARY\\AXIAL", "DERIVED\\SECONDARY"], i // 7),
        _col("SOPClassUID"): sop_class,
        _col("SOPInstanceUID"): instance_uid,
        _col("StudyDate"): study_date,
        _col("SeriesDate"): study_date,
        _col("StudyTime"): _text(80000 + (study % 900) * 11),
        _col("AccessionNumber"): _join(pa.scalar("A"), _text(study + 5_000_000)),
        _col("Modality"): modality,
        _col("Manufacturer"): manufacturer,
        _col("InstitutionName"): _pick(["General Hospital", "University Clinic",
                                        "Imaging Center North"], patient),
        _col("ReferringPhysicianName"): _pick(["", "Smith^John", "Doe^Jane"], study),
        _col("StudyDescription"): _pick(["CT CHEST W CONTRAST", "MRI BRAIN", "CHEST PA"],
                                        modality_index),
        _col("SeriesDescription"): _pick(["AXIAL 5mm", "T1 SAG", "T2 AX", "PA"], series),
        _col("ManufacturerModelName"): model,
        _col("PatientName"): _join(pa.scalar("PATIENT^"), _text(patient)),
        _col("PatientID"): patient_id,
        _col("PatientBirthDate"): _text(19300101 + (patient % 70) * 10000),
        _col("PatientSex"): _pick(["F", "M", "O"], patient),
        _col("PatientAge"): _pick(["045Y", "063Y", "071Y", "028Y"], patient),
        _col("SliceThickness"): _pick(["5.000000", "1.250000", ""], series),
        _col("KVP"): _pick(["120", "100", ""], modality_index),
        _col("SoftwareVersions"): _pick(["syngo CT VA48A", "VB20"], vendor),
        _col("ProtocolName"): _pick(["Chest", "Brain", "Abdomen"], study),
        _col("StudyInstanceUID"): study_uid,
        _col("SeriesInstanceUID"): series_uid,
        _col("StudyID"): _text(study % 10000),
        _col("SeriesNumber"): _text(series % 5 + 1),
        _col("InstanceNumber"): _text(instance),
        _col("ImagePositionPatient"): position,
        _col("ImageOrientationPatient"): pa.array(["1\\0\\0\\0\\1\\0"] * count),
        _col("FrameOfReferenceUID"): _join(pa.scalar(ROOT_UID + "4."), _text(study)),
        _col("SamplesPerPixel"): pa.array(["1"] * count),
        _col("PhotometricInterpretation"): pa.array(["MONOCHROME2"] * count),
        _col("Rows"): pa.array(["512"] * count),
        _col("Columns"): pa.array(["512"] * count),
        _col("PixelSpacing"): _pick(["0.703125\\0.703125", "0.488281\\0.488281"], series),
        _col("BitsAllocated"): pa.array(["16"] * count),
        _col("WindowCenter"): _pick(["40", "-600", ""], series),
        _col("RescaleIntercept"): _pick(["-1024", "0"], modality_index),
    }
    return pa.table(columns)


def _typed(table: pa.Table) -> pa.Table:
    """As the Parquet output types them: DA columns as dates (the rest stays text here)."""
    for keyword in ("StudyDate", "SeriesDate"):
        index = table.schema.get_field_index(_col(keyword))
        dates = pc.cast(pc.strptime(table.column(index), "%Y%m%d", "s"), pa.date32())
        table = table.set_column(index, _col(keyword), dates)
    return table


def write_table(path: str, rows: int) -> None:
    started = time.time()
    temp_path = path + ".partial"
    parquet = path.endswith(".parquet")
    writer = None
    for start in range(0, rows, BATCH):
        table = generate_batch(start, min(BATCH, rows - start))
        if parquet:
            table = _typed(table)
        if writer is None:
            writer = (pq.ParquetWriter(temp_path, table.schema, compression="zstd") if parquet
                      else pa_csv.CSVWriter(temp_path, table.schema))
        writer.write_table(table, **({"row_group_size": 16384} if parquet else {}))
    writer.close()
    os.replace(temp_path, path)
    print(f"wrote {rows:,} rows to {path} ({os.path.getsize(path) / 2**30:.2f} GiB) in "
          f"{time.time() - started:.0f} s", flush=True)


def _measure(kind: str, table: str) -> dict:
    """Run one measurement in a fresh process; its peak RSS and wall time."""
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "benchmarks.report_memory", "--child", kind,
                             table], cwd=REPO, capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": REPO})
    seconds = time.time() - started
    return {"kind": kind, "seconds": seconds, **json.loads(result.stdout.strip().splitlines()[-1])}


def _peak_rss_mib() -> float:
    """This process's peak RSS, ``VmHWM``: unlike ``ru_maxrss``, which a child inherits
    from its parent at fork, it belongs to the address space that exec created."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _own_figures(started: float) -> dict:
    """Peak RSS, CPU and wall seconds of the work itself."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - _CPU_AT_START[0]
    return {"peak_rss_mib": _peak_rss_mib(), "cpu_seconds": cpu,
            "work_seconds": time.time() - started, "rss_after_imports_mib": _RSS_AFTER_IMPORTS[0]}


_CPU_AT_START = [0.0]
_RSS_AFTER_IMPORTS = [0.0]


def _child(kind: str, table: str) -> None:
    from transforms.report.html_report import write_html_report  # imports count in neither figure
    from transforms.report.summary import OutputPaths

    started = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _CPU_AT_START[0] = usage.ru_utime + usage.ru_stime
    _RSS_AFTER_IMPORTS[0] = _peak_rss_mib()
    if kind == "anchor" and table.endswith(".parquet"):
        from transforms.output.table_stats import PARQUET_CELLS_PER_BATCH

        parquet = pq.ParquetFile(table)
        batch_rows = PARQUET_CELLS_PER_BATCH // len(parquet.schema_arrow.names)
        rows = sum(batch.num_rows for batch in parquet.iter_batches(batch_size=batch_rows,
                                                                    use_threads=False))
        print(json.dumps({"rows": rows, **_own_figures(started)}))
        return
    if kind == "anchor":
        from transforms.output.table_stats import CSV_BLOCK_BYTES

        header = pa_csv.open_csv(table).schema.names
        reader = pa_csv.open_csv(
            table, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES[0]),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=True, null_values=[""]))
        rows = sum(batch.num_rows for batch in reader)
        print(json.dumps({"rows": rows, **_own_figures(started)}))
        return
    paths = OutputPaths.for_output(
        table, "bench", ("parquet",) if table.endswith(".parquet") else ("csv",))
    for empty, header in ((paths.errors, "DicomPath,ErrorType,Message"),
                          (paths.skipped, "DicomPath,Reason")):
        with open(empty, "w", encoding="utf-8") as out:
            out.write(header + "\r\n")
    rows = int(os.environ.get("REPORT_ROWS", "0"))
    summary = {"files_matched": rows, "rows": rows, "errors": 0, "non_dicom_skipped": 0,
               "columns": 48, "accounted_for": True, "seconds": 1.0, "table": table,
               "outputs": [table], "errors_file": paths.errors, "skipped_file": paths.skipped,
               "report_file": paths.report}
    write_html_report(summary, paths, {"runner": "benchmark", "inputs": [], "options": {}})
    with open(paths.report, encoding="utf-8") as page:
        text = page.read()
    print(json.dumps({"report_bytes": len(text.encode()), "rows": rows, **_own_figures(started)}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", nargs="?")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--also", type=int, action="append", default=[],
                        help="also measure the report on a table of this many rows")
    parser.add_argument("--parquet", action="store_true",
                        help="also measure a Parquet-only run's report (scan-N.parquet)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "TABLE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    results = []
    formats = ("csv", "parquet") if args.parquet else ("csv",)
    for rows in sorted(set(args.also + [args.rows])):
        for suffix in formats:
            table = os.path.join(args.workdir, f"scan-{rows}.{suffix}")
            if not os.path.exists(table):
                write_table(table, rows)
            os.environ["REPORT_ROWS"] = str(rows)
            for kind in ("anchor", "report"):
                result = _measure(kind, table)
                result["table_rows"] = f"{rows:,} {suffix}"
                results.append(result)
            print(json.dumps(result), flush=True)
    print("\n| table rows | run | seconds | CPU s | peak RSS | of which imports | "
          "vs anchor (seconds, CPU, RSS) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    anchors = {r["table_rows"]: r for r in results if r["kind"] == "anchor"}
    for result in results:
        anchor = anchors[result["table_rows"]]
        print(f"| {result['table_rows']} | {result['kind']} | {result['work_seconds']:.1f} | "
              f"{result['cpu_seconds']:.1f} | {result['peak_rss_mib']:.0f} MiB | "
              f"{result['rss_after_imports_mib']:.0f} MiB | "
              f"{result['work_seconds'] / anchor['work_seconds']:.2f}x, "
              f"{result['cpu_seconds'] / anchor['cpu_seconds']:.2f}x, "
              f"{result['peak_rss_mib'] / anchor['peak_rss_mib']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
