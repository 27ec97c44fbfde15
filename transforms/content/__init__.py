"""Content policy: what a row may hold.

Tag selection, de-identification (PS3.15 Annex E), keyed pseudonyms, spreadsheet safety,
and the settings that bundle them for a run. May import ``common`` only: the readers
apply these rules, the rules know nothing of the readers.
"""
