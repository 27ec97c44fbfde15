"""Inputs: where files come from and how their bytes are opened.

Storage schemes (local, ``gs://``, ``s3://``) and their pre-flight checks, discovery and
matching of files under the inputs, special files (pipes, devices), the streams of zip
and tar members, the per-file limits every stream is read through, and DICOMweb
sources (their listing, and where their password or token is kept). May import
``common`` only.
"""
