"""Digests of the code that shapes stored data, named by module, never by file path.

Rows kept in the state are reused only while the code that made them is unchanged; the
state's settings fingerprint holds a digest of that code. Modules are named by their
import name and found with ``importlib`` without being imported (so the module that
fingerprints needs no import of the modules it fingerprints); the digest covers their
source text only, so moving a file, or installing the package elsewhere, leaves it as it is.
"""

from __future__ import annotations

import hashlib
import importlib.util


def source_of(module_name: str) -> bytes:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {module_name!r}")
    source = spec.loader.get_source(module_name)
    if source is None:
        raise ImportError(f"module {module_name!r} has no source to fingerprint")
    return source.encode("utf-8")


def code_digest(module_names) -> str:
    """sha256 (hex) of the modules' source texts, in the order given."""
    digest = hashlib.sha256()
    for name in module_names:
        digest.update(source_of(name))
    return digest.hexdigest()
