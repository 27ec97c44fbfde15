"""Inline SVG charts for the HTML report: bars, columns, one stacked bar, tiny fill bars.

Every piece of text that reaches the page goes through :func:`text`, so values and paths
from the archive (untrusted) can never become markup.
"""

from __future__ import annotations

import html
import re

PALETTE = ("#2563eb", "#0891b2", "#7c3aed", "#db2777", "#ea580c", "#65a30d", "#0d9488",
           "#9333ea", "#ca8a04", "#475569")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text(value) -> str:
    """``value`` as HTML text: escaped, control characters shown as ``\\xNN``."""
    shown = _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", str(value))
    return html.escape(shown, quote=True)


def number(value: int) -> str:
    return f"{value:,}"


def percent(part: int, whole: int) -> str:
    if not whole:
        return "0 %"
    share = 100.0 * part / whole
    if 0 < share < 0.1:
        return "<0.1 %"
    if 99.9 < share < 100:
        return ">99.9 %"
    return f"{share:.1f} %"


def _short(label: str, limit: int) -> str:
    """``label`` cut in the middle to ``limit`` characters: column names end in their tag."""
    if len(label) <= limit:
        return label
    tail = limit // 3
    return label[: limit - tail - 1] + "…" + label[-tail:]


def bar_chart(items, total: int, *, label_chars: int = 36, name: str = "",
              color: str | None = None, full_scale: int | None = None) -> str:
    """Horizontal bars: ``items`` are ``(label, count, tooltip)``; shares of ``total``.
    Bars are drawn against the largest count, or against ``full_scale`` if given."""
    if not items:
        return '<p class="none">none</p>'
    row, label_width, bar_width = 24, int(label_chars * 7.2) + 10, 250
    width = label_width + bar_width + 120
    height = row * len(items) + 4
    biggest = full_scale or max(count for _, count, _ in items) or 1
    parts = [f'<svg class="chart" role="img" aria-label="{text(name)}" data-chart="{text(name)}" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">']
    for index, (label, count, tooltip) in enumerate(items):
        y = index * row + 2
        length = max(1.0, bar_width * count / biggest) if count else 0
        fill = color or PALETTE[index % len(PALETTE)]
        parts.append(
            f'<g data-label="{text(label)}" data-count="{count}">'
            f'<title>{text(tooltip or label)}: {number(count)}</title>'
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end" class="label">'
            f'{text(_short(label, label_chars))}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{length:.1f}" height="{row - 8}" '
            f'rx="3" fill="{fill}"/>'
            f'<text x="{label_width + length + 6:.1f}" y="{y + 15}" class="value">'
            f'{number(count)} · {percent(count, total)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def column_chart(items, *, name: str = "", height: int = 190) -> str:
    """Vertical bars for a time axis: ``items`` are ``(label, count)`` in order."""
    if not items:
        return '<p class="none">none</p>'
    slot = max(12, min(48, 680 // len(items)))
    left, bottom, top = 46, 38, 12
    width = left + slot * len(items) + 8
    plot = height - bottom - top
    biggest = max(count for _, count in items) or 1
    every = max(1, len(items) // 24)  # label at most ~24 ticks
    parts = [f'<svg class="chart" role="img" aria-label="{text(name)}" data-chart="{text(name)}" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
             f'<line x1="{left}" y1="{top + plot}" x2="{width - 4}" y2="{top + plot}" '
             f'class="axis"/>',
             f'<text x="{left - 6}" y="{top + 8}" text-anchor="end" class="value">'
             f'{number(biggest)}</text>',
             f'<text x="{left - 6}" y="{top + plot}" text-anchor="end" class="value">0</text>']
    for index, (label, count) in enumerate(items):
        x = left + index * slot
        bar = plot * count / biggest
        if count:
            bar = max(bar, 1.5)
        parts.append(
            f'<g data-label="{text(label)}" data-count="{count}">'
            f'<title>{text(label)}: {number(count)}</title>'
            f'<rect x="{x + 2}" y="{top + plot - bar:.1f}" width="{slot - 4}" '
            f'height="{bar:.1f}" rx="2" fill="{PALETTE[0]}"/></g>'
        )
        if index % every == 0:
            cx = x + slot / 2
            parts.append(
                f'<text x="{cx:.1f}" y="{top + plot + 14}" text-anchor="end" class="tick" '
                f'transform="rotate(-40 {cx:.1f} {top + plot + 14})">{text(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def stacked_bar(parts, *, name: str = "") -> str:
    """One bar split into ``(label, count, color)`` parts, with a legend below it."""
    total = sum(count for _, count, _ in parts)
    width, height = 900, 64
    svg = [f'<svg class="chart wide" role="img" aria-label="{text(name)}" '
           f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet">']
    x = 0.0
    for label, count, color in parts:
        if not count:
            continue
        length = max(2.0, width * count / total)
        svg.append(f'<rect x="{x:.1f}" y="0" width="{length:.1f}" height="26" fill="{color}">'
                   f'<title>{text(label)}: {number(count)}</title></rect>')
        x += length
    if not total:
        svg.append(f'<rect x="0" y="0" width="{width}" height="26" class="empty"/>')
    legend_x = 0
    for label, count, color in parts:
        svg.append(f'<rect x="{legend_x}" y="40" width="12" height="12" rx="2" fill="{color}"/>'
                   f'<text x="{legend_x + 18}" y="51" class="label">{text(label)} '
                   f'{number(count)} · {percent(count, total)}</text>')
        legend_x += 300
    svg.append("</svg>")
    return "".join(svg)


def fill_bar(part: int, whole: int) -> str:
    share = 100.0 * part / whole if whole else 0.0
    return (f'<svg class="mini" viewBox="0 0 100 8" width="100" height="8" aria-hidden="true">'
            f'<rect width="100" height="8" class="track"/>'
            f'<rect width="{share:.2f}" height="8" fill="{PALETTE[0]}"/></svg>')
