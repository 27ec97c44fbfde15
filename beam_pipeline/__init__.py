"""The launcher: command line, options, the pipeline's assembly, the output lock and
the progress bar. Importing it changes nothing: ``cli.main`` sets up what the run prints."""
