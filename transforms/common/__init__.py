"""Leaf modules shared by every stage: they import nothing else of the project's.

Row vocabulary and output tags live here so that a stage names another stage's records
without importing it; ``beam_internals`` and ``pydicom_internals`` are the only places
that touch a dependency's private names.
"""
