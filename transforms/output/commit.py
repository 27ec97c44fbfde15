"""The commit step, last: the state names this run's generation, then temp files go.

Runs once the summary and the HTML report are written, and reads only small records
(the shards' and outcome parts' names) as side inputs. Both halves are idempotent
(``state.commit_state`` replaces two JSON files, ``cleanup.cleanup`` deletes what is
not listed), so a retried step does the same again.
"""

from __future__ import annotations

import apache_beam as beam

from transforms.common.tags import HTML_REPORT, OUTCOME_PARTS, SHARDS, SUMMARY
from transforms.output.cleanup import cleanup
from transforms.output.state import RunState, commit_state


class CommitRun(beam.PTransform):
    """{SUMMARY, HTML_REPORT, SHARDS, OUTCOME_PARTS} -> the summary, once committed."""

    def __init__(self, state: RunState, temp_dir: str):
        super().__init__()
        self.state = state
        self.temp_dir = temp_dir

    def expand(self, records):
        return (
            records[SUMMARY]
            | "CommitState" >> beam.Map(
                commit_state, self.state, beam.pvalue.AsList(records[SHARDS]),
                beam.pvalue.AsList(records[OUTCOME_PARTS]),
                beam.pvalue.AsList(records[HTML_REPORT]),  # only once the page is written
            )
            | "Cleanup" >> beam.Map(cleanup, self.state, self.temp_dir)
        )
