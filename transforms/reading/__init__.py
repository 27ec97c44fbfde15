"""Reading: one file's (or archive member's) header to one row, or an error, or a skip.

Extraction recognises DICOM by content and tries the lean header reader before the
pydicom flattener; archives' members are extracted like files; every row's cells are
bounded before it leaves. May import ``common``, ``inputs`` and ``content``.
"""
