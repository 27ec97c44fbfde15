"""Reading: one file's (or archive member's) header to one row, or an error, or a skip.

Extraction recognises DICOM by content and tries the lean header reader before the
pydicom flattener; archives' members are extracted like files; every row's cells are
bounded before it leaves. Both readers name columns with ``naming`` and write values
with ``values``, so their rows are the same. May import ``common``, ``inputs`` and
``content``.
"""
