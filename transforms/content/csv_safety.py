"""Spreadsheet safety for the CSV (``--csv-formula-guard``): a text cell that starts with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return is prefixed with ``'``, so that
Excel, LibreOffice or Google Sheets show it instead of running it as a formula (OWASP's
CSV injection advice). Numbers stay numbers: columns read only with numeric VRs are
never touched (``-5.0`` in a DS column is a value, not a formula). Parquet is typed and
never changed.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NUMERIC_VRS = frozenset({"DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "OD", "OF"})


def guarded_columns(names: list[str], columns) -> list[bool]:
    """Per column name: may its cells be guarded (is it text)? ``columns``: the
    ``transforms.output.columns.Column`` list, whose VRs say which columns are numbers."""
    vrs = {column.name: column.vrs for column in columns}
    return [not (vrs.get(name) and vrs[name] <= NUMERIC_VRS) for name in names]


def guard_cell(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def guard_fields(fields: list[str], guarded: list[bool]) -> list[str]:
    return [guard_cell(text) if text and guard else text for text, guard in zip(fields, guarded)]
