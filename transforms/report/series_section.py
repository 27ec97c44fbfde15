"""The HTML report's series section, from the series tables' figures
(``transforms/output/series_records.report_figures``): series by modality, the series
that look incomplete (gaps, duplicates, uneven spacing) and the series whose
should-be-constant attributes (modality, rows, columns, orientation, pixel spacing)
vary, each with its files' common folder. Every value is escaped."""

from __future__ import annotations

from transforms.report.charts import bar_chart, number, text

# The section's data-figure keys (the page's header has its own "series" and "studies").
FIGURES = ("series_rows", "study_rows", "incomplete_series", "varying_series")


def _rows(records: list, last: str, value) -> str:
    return "".join(
        f'<tr><td class="path">{text(record["folder"])}</td><td>{text(record["modality"])}</td>'
        f'<td>{number(record["files"])}</td><td>{text(record["series"])}</td>'
        f'<td>{text(value(record))}</td></tr>'
        for record in records
    )


def _table(table_id: str, records: list, count: int, last: str, value, what: str) -> str:
    if not records:
        return f'<p class="none">no {what}</p>'
    head = ('<thead><tr><th>Common folder</th><th>Modality</th><th>Files</th>'
            f'<th>SeriesInstanceUID</th><th>{text(last)}</th></tr></thead>')
    note = (f'<p class="note">{number(len(records))} of {number(count)} {what}; all are '
            'in the series table</p>') if count > len(records) else ""
    return (f'<div class="scroll"><table id="{table_id}">{head}<tbody>'
            f'{_rows(records, last, value)}</tbody></table></div>{note}')


def series_section(figures: dict | None) -> str:
    if not figures:
        return ""
    modalities = [(modality, count, modality) for modality, count in figures["by_modality"]]
    incomplete = _table("incomplete-series", figures["incomplete"], figures["incomplete_count"],
                        "Defects", lambda record: record["defects"], "incomplete series")
    varying = _table("varying-series", figures["varying"], figures["varying_count"],
                     "Varies", lambda record: ", ".join(record["attributes"]),
                     "series with varying attributes")
    hidden = ", ".join(figures.get("hidden_keys", ()))
    if hidden:
        hidden = (f'<p class="note" id="hidden-keys">Grouped by {text(hidden)}, read for '
                  'grouping only: the tag selection leaves them out, so the tables do not '
                  'show them.</p>')
    return (
        '<section id="series"><h2>Series</h2>'
        f'<p><span data-figure="series_rows" data-value="{figures["series"]}">'
        f'{number(figures["series"])}</span> series in '
        f'<span data-figure="study_rows" data-value="{figures["studies"]}">'
        f'{number(figures["studies"])}</span> studies '
        '(one row each in the series and studies tables)</p>'
        f'{hidden}<h3>Series by modality</h3>{bar_chart(modalities, figures["series"], name="modalities")}'
        f'<h3>Incomplete series <span data-figure="incomplete_series" '
        f'data-value="{figures["incomplete_count"]}">({number(figures["incomplete_count"])})'
        f'</span></h3>{incomplete}'
        f'<h3>Series whose should-be-constant attributes vary <span data-figure="varying_series" '
        f'data-value="{figures["varying_count"]}">({number(figures["varying_count"])})</span>'
        f'</h3>{varying}</section>'
    )
