"""Inputs: where files come from and how their bytes are opened.

Storage schemes (local, ``gs://``, ``s3://``) and their pre-flight checks, discovery and
matching of files under the inputs, special files (pipes, devices), the streams of zip
and tar members, and the per-file limits every stream is read through. May import
``common`` only.
"""
