"""The pipeline's steps: one module (or sub-package) per step; see beam_pipeline/pipeline.py."""
