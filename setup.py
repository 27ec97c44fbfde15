"""Installable package; also what Dataflow stages with --setup_file."""

from setuptools import setup

setup(
    name="dicom-meta-extract",
    version="0.1.0",
    description="Turn DICOM archives into one table: a row per file, a column per header element.",
    packages=["beam_pipeline", "transforms"],
    python_requires=">=3.10",
    install_requires=[
        "apache-beam>=2.77,<2.78",
        "pydicom>=3.0,<4",
        "pyarrow>=14",
        "numpy",
        "pyyaml",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest", "pandas", "polars", "duckdb", "psutil"],
    },
    entry_points={"console_scripts": ["dicom-meta-extract=beam_pipeline.cli:main"]},
)
