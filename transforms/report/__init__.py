"""Report: ``errors.csv``, ``skipped.csv``, ``summary.json`` and the HTML report.

Reads only what the run wrote (records, the table writers' figures), never the source
files. May import every other stage.
"""
