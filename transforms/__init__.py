"""The pipeline's stages, one sub-package each; ``beam_pipeline/pipeline.py`` composes them.

Each package may import the ones before it in this order, never one after it
(``tests/test_layout.py`` checks it, and that no module imports itself in a loop):

    common   leaf modules every stage shares: row vocabulary, output tags, escaped
             paths, the adapters to Beam's and pydicom's internals
    inputs   what is read: storage schemes, discovery and matching, special files,
             archive members' streams, per-file limits
    content  what goes into a row: tag selection, de-identification, pseudonyms,
             spreadsheet safety
    reading  a file's header to its row: extraction, the lean reader, the pydicom
             flattener, archives' members, error vocabulary, bounded cells
    output   rows to tables: shards, state, reuse, columns, types, the table writers
    report   the summary, errors and skips, and the HTML report

``docs/architecture.md`` draws the stages and what flows between them.
"""
