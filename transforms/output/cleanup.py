"""Cleanup, the last step: delete what no committed output needs any more.

Runs after ``CURRENT`` names this run's generation, while this run holds the output's
lock (so no other run is reading any of it). Every delete tolerates files that are
already gone (a repeated cleanup, or one a kill interrupted, just finishes the job):

* this run's temp dir ``.scan.tmp-<run>/`` (merged tables are renamed out of it by now);
* every generation but this one, including those of killed runs (they were offered for
  reuse at launch and what was worth keeping is now in this generation);
* temp dirs of killed runs ``.scan.tmp-*/``;
* files in this generation that ``GENERATION.json`` does not list: shards and parts of
  bundle attempts the runner discarded, and ``*.partial`` files of killed writes.

On buckets a "directory" is a prefix: it is always listed as ``prefix/`` with the
trailing slash, so ``gen-1`` never matches ``gen-10``'s objects.
"""

from __future__ import annotations

import os

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from transforms.output.state import GENERATION, RunState, read_json
from transforms.inputs.storage import is_bucket


def list_tree(directory: str) -> list[str]:
    """Every file under ``directory`` (a prefix ending in ``/`` on buckets)."""
    if is_bucket(directory):
        prefix = directory.rstrip("/") + "/"
        return [meta.path for meta in FileSystems.match([prefix + "**"])[0].metadata_list]
    found = []
    for folder, _, names in os.walk(directory):
        found.extend(os.path.join(folder, name) for name in names)
    return found


def children(directory: str, prefix: str = "") -> set[str]:
    """Names directly under ``directory`` starting with ``prefix`` (files or folders)."""
    if is_bucket(directory):
        base = directory.rstrip("/") + "/"
        pattern = base + _glob_escape(prefix) + "**"
        return {meta.path[len(base):].split("/", 1)[0]
                for meta in FileSystems.match([pattern])[0].metadata_list}
    try:
        return {name for name in os.listdir(directory) if name.startswith(prefix)}
    except FileNotFoundError:
        return set()


def _glob_escape(text: str) -> str:
    return "".join(f"[{char}]" if char in "*?[" else char for char in text)


def delete_paths(paths) -> None:
    """Delete files; ones already gone are fine, any other failure raises."""
    paths = sorted(set(paths))
    if not paths:
        return
    try:
        FileSystems.delete(paths)
    except BeamIOError as exc:
        still = [path for path in (exc.exception_details or {}) if FileSystems.exists(path)]
        if still:
            raise


def delete_tree(directory: str) -> None:
    """A folder, or on buckets every object under ``directory/``."""
    if is_bucket(directory):
        delete_paths(list_tree(directory))
    elif os.path.isdir(directory):
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    elif os.path.exists(directory):
        os.remove(directory)


def cleanup(summary: dict, state: RunState, temp_dir: str) -> dict:
    """Delete the run's temp dir, other generations, killed runs' temp dirs and this
    generation's unlisted files. Returns the summary unchanged."""
    from transforms.inputs import storage

    storage.prepare_filesystems()
    delete_tree(temp_dir)
    own = FileSystems.split(state.generation)[1]
    for name in sorted(children(state.state_dir, "gen-") - {own}):
        delete_tree(FileSystems.join(state.state_dir, name))
    output_dir, temp_name = FileSystems.split(temp_dir.rstrip("/"))
    stem = temp_name.rsplit(".tmp-", 1)[0] + ".tmp-"
    for name in sorted(children(output_dir, stem) - {temp_name}):
        delete_tree(FileSystems.join(output_dir, name))
    listed = read_json(FileSystems.join(state.generation, GENERATION), "generation")
    keep = set(listed["row_shards"]) | set(listed["outcome_parts"]) | {GENERATION, "settings.json"}
    delete_paths(path for path in list_tree(state.generation)
                 if FileSystems.split(path)[1] not in keep)
    return summary
