"""The HTML report page: one self-contained file, a pure function of the run's figures.

No network: styles, the one small script (the column filter) and every chart (SVG) are
inline, and a Content-Security-Policy forbids loading anything else; only the script whose
hash is in the policy may run. Every value from the archive is escaped (``report_charts.text``).
Key figures carry ``data-figure``/``data-value`` attributes so tests (and scripts) can read
them from the rendered page.
"""

from __future__ import annotations

import base64
import hashlib
import json

from pydicom.uid import UID

from transforms.report.charts import (
    bar_chart, column_chart, fill_bar, number, percent, stacked_bar, text,
)
from transforms.output.table_stats import PAIR_SEPARATOR
from transforms.report.series_section import series_section

TOP = 15  # bars per distribution; the rest is one "other" bar
FILL_EXTREMES = 15
MONTHS_WHEN_SPAN_AT_MOST = 36
SUMMARY_SHOWN = {  # summary.json keys shown in their own place; the rest goes to "More"
    "files_matched", "rows", "errors", "non_dicom_skipped", "columns", "accounted_for",
    "seconds", "table", "outputs", "errors_file", "skipped_file", "report_file",
}
SELECTION_KEYS = ("tags", "exclude_tags", "deidentification", "deidentify")
ACCENT = "#2563eb"
OUTCOME_COLORS = {"rows": "#16a34a", "errors": "#dc2626", "skipped": "#d97706"}

STYLE = """
:root{--ink:#1f2937;--muted:#6b7280;--line:#e5e7eb;--card:#f8fafc;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--ink);background:#fff}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 10px;padding-bottom:4px;
border-bottom:2px solid var(--line)}h3{font-size:14px;margin:14px 0 6px;color:#374151}
.sub{color:var(--muted);margin:0 0 14px;word-break:break-all}
.status{padding:10px 14px;border-radius:8px;font-weight:600;margin:14px 0}
.ok{background:#dcfce7;color:#14532d;border:1px solid #86efac}
.bad{background:#fee2e2;color:#7f1d1d;border:1px solid #fca5a5}
.warn{background:#fef3c7;color:#78350f;border:1px solid #fcd34d}
.info{background:#e0f2fe;color:#0c4a6e;border:1px solid #7dd3fc;font-weight:500}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .n{font-size:22px;font-weight:700;font-variant-numeric:tabular-nums}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(540px,1fr));gap:8px 28px}
.grid>div,.cards>div{min-width:0}
.chart{max-width:100%;height:auto;display:block;margin-bottom:4px}
.chart .label{font-size:12px;fill:#374151}.chart .value{font-size:11px;fill:#4b5563}
.chart .tick{font-size:10px;fill:#4b5563}.chart .axis{stroke:#9ca3af}
.chart .empty{fill:var(--line)}
.none,.note{color:var(--muted)}.note{font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--card);position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.path{word-break:break-all;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
.mini .track{fill:var(--line)}
.scroll{max-height:520px;overflow:auto;border:1px solid var(--line);border-radius:6px}
input[type=search]{font:inherit;padding:6px 10px;width:340px;max-width:100%;
border:1px solid #cbd5e1;border-radius:6px;margin:4px 12px 8px 0}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0}
dl.kv dt{color:var(--muted)}dl.kv dd{margin:0;word-break:break-all}
footer{margin-top:36px;color:var(--muted);font-size:12px}
@media print{
@page{margin:14mm}
body{font-size:11px}main{max-width:none;padding:0}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
.noprint{display:none!important}
.scroll{max-height:none;overflow:visible;border:0}
tr[hidden]{display:table-row!important}
th{position:static}
.grid>div,.card,svg,tr{break-inside:avoid}
h2,h3{break-after:avoid}
.grid{grid-template-columns:1fr}
.cards{grid-template-columns:repeat(4,1fr)}
}
"""

SCRIPT = """
(function(){
var input=document.getElementById('column-filter');
var rows=Array.prototype.slice.call(document.querySelectorAll('#column-table tbody tr'));
var shown=document.getElementById('column-shown');
function apply(){
var q=input.value.toLowerCase(),n=0;
rows.forEach(function(r){
var hit=r.getAttribute('data-name').indexOf(q)>=0;r.hidden=!hit;if(hit)n++;});
shown.textContent=n.toLocaleString('en-US')+' of '+rows.length.toLocaleString('en-US')+
' columns shown';
shown.setAttribute('data-value',String(n));
}
input.addEventListener('input',apply);
apply();
document.body.setAttribute('data-script','ran');
})();
"""


def _figure(key: str, value, shown: str | None = None) -> str:
    return (f'<span data-figure="{text(key)}" data-value="{text(value)}">'
            f'{shown or text(value)}</span>')


def _card(key: str, label: str, value, shown: str | None = None) -> str:
    return (f'<div class="card"><div class="n">{_figure(key, value, shown)}</div>'
            f'<div class="k">{text(label)}</div></div>')


def _counts_bars(dist: dict, name: str, label=lambda value: (value, value)) -> str:
    counts = dist["counts"]
    if not counts and not dist["other"]:
        return ('<p class="none">no value: the column is not in the table (empty in every '
                'file, or not selected)</p>')
    total = sum(count for _, count in counts) + dist["other"]
    items = []
    for value, count in counts[:TOP]:
        shown, tooltip = label(value)
        items.append((shown, count, tooltip))
    rest = sum(count for _, count in counts[TOP:]) + dist["other"]
    if rest:
        others = len(counts) - TOP
        label = "other values" if dist["other"] or others <= 0 else \
            f"{number(others)} other value{'s' if others > 1 else ''}"
        items.append((label, rest, ""))
    note = '<p class="note">approximate: more distinct values than kept</p>' \
        if dist["approximate"] else ""
    distinct = f'<p class="note">{number(len(counts))} distinct value(s), ' \
               f'{number(total)} files with a value</p>' if counts else ""
    return bar_chart(items, total, name=name) + distinct + note


def _uid_label(value: str) -> tuple[str, str]:
    name = UID(value).name if value else value
    return (name, f"{name} ({value})" if name != value else value)


def _model_label(value: str) -> tuple[str, str]:
    manufacturer, _, model = value.partition(PAIR_SEPARATOR)
    shown = f"{manufacturer or '(no manufacturer)'} · {model or '(no model)'}"
    return shown, shown


def _dates(months: dict) -> str:
    valid, invalid = {}, 0
    for value, count in months["counts"]:
        if len(value) == 6 and value.isdigit() and 1800 <= int(value[:4]) <= 2200 \
                and 1 <= int(value[4:]) <= 12:
            valid[value] = count
        else:
            invalid += count
    invalid += months["other"]
    if not valid:
        return '<p class="none">no Study Date in the table</p>'
    years: dict[int, int] = {}
    for value, count in valid.items():
        years[int(value[:4])] = years.get(int(value[:4]), 0) + count
    first, last = min(years), max(years)
    span = range(first, last + 1) if last - first <= 200 else sorted(years)
    parts = ['<h3>Studies by year (files per Study Date year)</h3>',
             column_chart([(str(year), years.get(year, 0)) for year in span],
                          name="files by study year")]
    low, high = min(valid), max(valid)
    month_span = (int(high[:4]) - int(low[:4])) * 12 + int(high[4:]) - int(low[4:]) + 1
    if month_span <= MONTHS_WHEN_SPAN_AT_MOST:
        items, year, month = [], int(low[:4]), int(low[4:])
        for _ in range(month_span):
            key = f"{year:04d}{month:02d}"
            items.append((f"{year:04d}-{month:02d}", valid.get(key, 0)))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        parts += ['<h3>By month</h3>', column_chart(items, name="files by study month")]
    note = f"{first}–{last}"
    if invalid:
        note += f"; {number(invalid)} file(s) with a Study Date that is not a valid date"
    parts.append(f'<p class="note">{text(note)}</p>')
    return "".join(parts)


def _fill_section(stats: dict) -> str:
    rows = stats["rows"]
    fill = [(name, count) for name, count in stats["fill"]]
    ordered = sorted(fill, key=lambda item: (-item[1], item[0]))
    top = [(name, count, name) for name, count in ordered[:FILL_EXTREMES]]
    bottom = [(name, count, name) for name, count in ordered[::-1][:FILL_EXTREMES]]
    fill_style = {"label_chars": 44, "color": ACCENT, "full_scale": rows}
    always = sum(1 for _, count in fill if count == rows)
    half = sum(1 for _, count in fill if 2 * count >= rows)
    rare = sum(1 for _, count in fill if 100 * count < rows)
    body = []
    for index, (name, count) in enumerate(fill):
        body.append(f'<tr data-name="{text(name.lower())}"><td class="num">{index + 1}</td>'
                    f'<td>{text(name)}</td><td class="num">{number(count)}</td>'
                    f'<td class="num">{percent(count, rows)}</td>'
                    f'<td>{fill_bar(count, rows)}</td></tr>')
    return (
        '<section id="fill"><h2>Column fill rate</h2>'
        f'<p class="note">Share of the {number(rows)} rows with a value, for each of the '
        f'{_figure("table_columns", len(fill), number(len(fill)))} columns of the table: '
        f'{number(always)} filled in every row, {number(half)} in at least half of them, '
        f'{number(rare)} in under 1 %.</p>'
        '<div class="grid"><div><h3>Most filled</h3>'
        f'{bar_chart(top, rows, name="most filled columns", **fill_style)}</div>'
        '<div><h3>Least filled</h3>'
        f'{bar_chart(bottom, rows, name="least filled columns", **fill_style)}</div></div>'
        '<h3>Every column</h3><div class="noprint">'
        '<input type="search" id="column-filter" placeholder="Filter columns, e.g. 0018 or '
        'Spacing" aria-label="filter columns">'
        f'<span id="column-shown" class="note">{number(len(fill))} columns</span></div>'
        '<div class="scroll"><table id="column-table"><thead><tr><th class="num">#</th>'
        '<th>Column</th><th class="num">Rows</th><th class="num">Filled</th><th></th></tr>'
        f'</thead><tbody>{"".join(body)}</tbody></table></div></section>'
    )


def _errors_section(summary: dict, errors: dict, skips: dict) -> str:
    error_items = [(kind, count, kind) for kind, count in errors["by_type"]["counts"][:TOP]]
    skip_items = [(reason, count, reason) for reason, count in skips["by_reason"]["counts"][:TOP]]
    error_chart = bar_chart(error_items, summary["errors"], name="errors",
                            color=OUTCOME_COLORS["errors"])
    skip_chart = bar_chart(skip_items, summary["non_dicom_skipped"], label_chars=44,
                           name="skips", color=OUTCOME_COLORS["skipped"])
    sample = errors["sample"]
    rows = "".join(
        f'<tr><td class="path">{text(path)}</td><td>{text(kind)}</td>'
        f'<td>{text(message)}</td></tr>'
        for path, kind, message in sample
    )
    table = (f'<div class="scroll"><table id="error-sample"><thead><tr><th>DicomPath</th>'
             f'<th>ErrorType</th><th>Message</th></tr></thead><tbody>{rows}</tbody></table></div>'
             f'<p class="note">{number(len(sample))} of {number(summary["errors"])} errors; all '
             f'of them are in {text(summary.get("errors_file", ""))}</p>') if sample else \
        '<p class="none">no errors</p>'
    return (
        '<section id="problems"><h2>Errors and skipped files</h2><div class="grid">'
        f'<div><h3>Errors by type</h3>{error_chart}</div>'
        f'<div><h3>Skipped (not DICOM) by reason</h3>{skip_chart}</div></div>'
        f'<h3>Sample of errors</h3>{table}</section>'
    )


def _value(value) -> str:
    """A summary or settings value of any JSON shape, as escaped HTML."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        return '<dl class="kv">' + "".join(
            f"<dt>{text(key)}</dt><dd>{_value(item)}</dd>" for key, item in value.items()
        ) + "</dl>"
    if isinstance(value, list):
        return ", ".join(_value(item) for item in value) if value else "(none)"
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return number(value)
    return text(value)


def _kv(pairs) -> str:
    return '<dl class="kv">' + "".join(
        f"<dt>{text(key)}</dt><dd>{_value(value)}</dd>" for key, value in pairs
    ) + "</dl>"


def _run_section(summary: dict, settings: dict) -> str:
    seconds = summary.get("seconds") or 0
    rate = summary["files_matched"] / seconds if seconds else 0
    run = [("run time", f"{seconds:,.1f} s"), ("throughput", f"{rate:,.0f} files/s"),
           ("runner", settings.get("runner", "")), ("inputs", settings.get("inputs", [])),
           ("outputs", summary.get("outputs", []))]
    selection = [(key, summary[key]) for key in SELECTION_KEYS if key in summary]
    more = [(key, value) for key, value in summary.items()
            if key not in SUMMARY_SHOWN and key not in SELECTION_KEYS]
    parts = ['<section id="run"><h2>Run</h2>', _kv(run)]
    if selection:
        parts += ['<h3>Selection and de-identification</h3>', _kv(selection)]
    parts += ['<h3>Settings</h3>', _kv(settings.get("options", {}).items())]
    if more:
        parts += ['<h3>More from the summary</h3>', _kv(more)]
    parts.append("</section>")
    return "".join(parts)


def _header(summary: dict, stats: dict | None, generated: str) -> str:
    matched, rows = summary["files_matched"], summary["rows"]
    errors, skipped = summary["errors"], summary["non_dicom_skipped"]
    if summary["accounted_for"]:
        status = ('<div class="status ok" data-figure="accounted_for" data-value="true">'
                  f'Every matched file is accounted for: {number(rows)} rows + {number(errors)} '
                  f'errors + {number(skipped)} skipped = {number(matched)} files matched.</div>')
    else:
        status = ('<div class="status bad" data-figure="accounted_for" data-value="false">'
                  f'Not accounted for: {number(rows)} rows + {number(errors)} errors + '
                  f'{number(skipped)} skipped ≠ {number(matched)} files matched.</div>')
    deidentification = summary.get("deidentification")
    if deidentification:
        profile = deidentification.get("profile", "") if isinstance(deidentification, dict) \
            else ""
        status += (f'<div class="status info" data-figure="deidentified" data-value="true">'
                   f'De-identified table{": " + text(profile) if profile else ""}. Every value '
                   'below comes from the de-identified table.</div>')
    selected = summary.get("tags")
    if selected:
        status += (f'<div class="status info">Only the selected elements are in the table: '
                   f'{text(", ".join(map(str, selected)))}</div>')
    seconds = summary.get("seconds") or 0
    cards = [
        _card("files_matched", "files matched", matched, number(matched)),
        _card("rows", "rows", rows, number(rows)),
        _card("errors", "errors", errors, number(errors)),
        _card("non_dicom_skipped", "skipped (not DICOM)", skipped, number(skipped)),
        _card("columns", "columns", summary["columns"], number(summary["columns"])),
    ]
    if stats is not None:
        for key, label in (("patients", "patients"), ("studies", "studies"),
                           ("series", "series")):
            distinct = stats["distinct"][key]
            shown = ("≈" if distinct["estimated"] else "") + number(distinct["count"])
            cards.append(_card(key, label, distinct["count"], shown))
    cards.append(_card("seconds", "seconds", seconds, f"{seconds:,.1f}"))
    cards.append(_card("files_per_second", "files / second",
                       round(matched / seconds) if seconds else 0,
                       number(round(matched / seconds)) if seconds else "–"))
    outcome = stacked_bar([("rows", rows, OUTCOME_COLORS["rows"]),
                           ("errors", errors, OUTCOME_COLORS["errors"]),
                           ("skipped", skipped, OUTCOME_COLORS["skipped"])],
                          name="what became of the matched files")
    return (
        f'<header><h1>DICOM archive report</h1><p class="sub">{text(summary.get("table", ""))}'
        f' · generated {text(generated)}</p></header>{status}'
        f'<section id="overview"><div class="cards">{"".join(cards)}</div>'
        f'<h3>What became of the matched files</h3>{outcome}</section>'
    )


def _content_section(stats: dict) -> str:
    dist = stats["distributions"]
    return (
        '<section id="content"><h2>What is in the archive</h2><div class="grid">'
        f'<div><h3>Modality</h3>{_counts_bars(dist["modality"], "modality")}</div>'
        f'<div><h3>SOP class</h3>{_counts_bars(dist["sop_class"], "SOP class", _uid_label)}'
        '</div>'
        f'<div><h3>Manufacturer</h3>{_counts_bars(dist["manufacturer"], "manufacturer")}</div>'
        f'<div><h3>Manufacturer · model</h3>'
        f'{_counts_bars(stats["models"], "model", _model_label)}</div>'
        f'<div><h3>Transfer syntax</h3>'
        f'{_counts_bars(dist["transfer_syntax"], "transfer syntax", _uid_label)}</div>'
        f'</div><h2>Study dates</h2>{_dates(stats["study_months"])}</section>'
    )


def render(summary: dict, stats: dict | None, stats_problem: str, errors: dict, skips: dict,
           settings: dict, generated: str, series: dict | None = None) -> str:
    """The whole page. ``stats`` is None when the table could not be read (``stats_problem``
    says why): the page then shows what the summary knows."""
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode()
    policy = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
              f"script-src 'sha256-{script_hash}'")
    body = [_header(summary, stats, generated)]
    if stats is None:
        body.append(f'<div class="status warn">The table could not be read for the figures '
                    f'below: {text(stats_problem)}</div>')
    else:
        body += [_content_section(stats), _fill_section(stats)]
    body.append(series_section(series))  # "" without series tables
    body += [_errors_section(summary, errors, skips), _run_section(summary, settings)]
    source = stats["source"] if stats else ""
    body.append(
        f'<footer>Figures computed in one streaming pass over {text(source)}'
        ' (patients by Patient ID, studies by Study Instance UID, series by Series Instance '
        'UID; ≈ marks an estimate, used beyond two million distinct values). '
        'Generated by dicom-meta-extract.</footer>'
    )
    figures = json.dumps({"files_matched": summary["files_matched"], "rows": summary["rows"]})
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{text(policy)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>DICOM archive report: {text(summary.get("table", ""))}</title>'
        f'<style>{STYLE}</style></head><body data-figures="{text(figures)}"><main>'
        + "".join(body)
        + f'</main><script>{SCRIPT}</script></body></html>'
    )
