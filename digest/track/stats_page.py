"""The stats page (`digest stats --html FILE`, and /stats on the editor's preview server).

One self-contained HTML file: a line chart of the open, click and unsubscribe rates over the issues
(human opens and machine-only opens drawn apart, so Apple Mail Privacy Protection cannot pass for
interest), then the figures as a table, which is also what a screen reader gets: readers' votes and voters
per issue are rows there (a voter is also a clicker: a vote is a click for engagement).
"""

from __future__ import annotations

from html import escape

from digest.track.stats import IssueStats

# Series: (rate key, label, colour, dashed). Colours keep 4.5:1 against the white plot and differ in
# dash as well as hue, so they read in greyscale and for colour-blind readers.
SERIES = (
    ("open", "Human opens", "#1d4ed8", False),
    ("machine_only_open", "Machine-only opens", "#59636e", True),
    ("click", "Clickers", "#116329", False),
    ("unsubscribe", "Unsubscribes", "#a40e26", True),
)
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 720, 300, 56, 48, 16, 40


def _nice_max(value: float) -> float:
    """The top of the y axis: the next of 5%, 10%, 20%, 25%, 50%, 75%, 100% above the highest rate."""
    for top in (0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0):
        if value <= top:
            return top
    return 1.0


def chart_svg(rows: list[IssueStats]) -> str:
    """An SVG line chart of the rates, oldest issue on the left."""
    rows = list(reversed(rows))  # issue_stats gives newest first
    if not rows:
        return "<p>No issue has been sent yet.</p>"
    values = [row.rates.get(key) or 0 for row in rows for key, *_ in SERIES]
    top = _nice_max(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w / 2 if len(rows) == 1 else plot_w * i / (len(rows) - 1))

    def y(rate: float) -> float:
        return TOP + plot_h * (1 - rate / top)

    parts = [f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
             f'aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg">'
             '<title id="chart-title">Open, click and unsubscribe rates per issue</title>']
    for step in range(5):
        rate = top * step / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(rate):.1f}" y2="{y(rate):.1f}" stroke="#d0d7de"/>'
                     f'<text x="{LEFT - 8}" y="{y(rate) + 4:.1f}" text-anchor="end" class="axis">{rate * 100:g}%</text>')
    for i, row in enumerate(rows):
        parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 20}" text-anchor="middle" class="axis">'
                     f'{escape(row.week)}</text>')
    for key, label, colour, dashed in SERIES:
        points = [(x(i), y(row.rates.get(key) or 0), row) for i, row in enumerate(rows)]
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2.5"{dash} points="'
                     + " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points) + '"/>')
        for px, py, row in points:
            rate = row.rates.get(key)
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{colour}"><title>{escape(row.week)}: '
                         f'{escape(label)} {"n/a" if rate is None else f"{rate:.1%}"}</title></circle>')
    parts.append("</svg>")
    legend = "".join(f'<li><span class="swatch{" dashed" if d else ""}" style="border-color:{c}"></span>{escape(l)}</li>'
                     for _, l, c, d in SERIES)
    return "".join(parts) + f'<ul class="legend">{legend}</ul>'


FIGURES = (
    ("recipients", "Recipients"), ("sent", "Sent"), ("failed", "Failed"), ("delivered", "Delivered"),
    ("bounced", "Bounced"), ("human_openers", "Human openers"), ("machine_only_openers", "Machine-only openers"),
    ("clickers", "Clickers (incl. voters)"), ("votes", "Votes"), ("voters", "Voters"),
    ("unsubscribes", "Unsubscribes"), ("complaints", "Complaints"),
)


def table_html(rows: list[IssueStats]) -> str:
    head = "".join(f'<th scope="col">{escape(row.week)}</th>' for row in rows)
    # The issue's state first (issue 18): a paused or cancelled issue says why, as `digest stats` does.
    states = "".join(f"<td>{escape(row.state.name)}" + (f' <span class=muted>({escape(row.state.reason)})</span>'
                                                          if row.state.halts and row.state.reason else "") + "</td>"
                     for row in rows)
    body = [f'<tr><th scope="row">State</th>{states}</tr>']
    rate_of = {"bounced": "bounce", "human_openers": "open", "machine_only_openers": "machine_only_open",
               "clickers": "click", "voters": "vote", "unsubscribes": "unsubscribe", "complaints": "complaint"}
    for field, label in FIGURES:
        cells = []
        for row in rows:
            rate = row.rates.get(rate_of.get(field, ""), None)
            cells.append(f"<td>{getattr(row, field):,}" + (f" <span class=muted>({rate:.1%})</span>" if rate is not None else "")
                         + "</td>")
        body.append(f'<tr><th scope="row">{label}</th>{"".join(cells)}</tr>')
    return (f'<table><caption>Per issue, newest first; % of {escape(rows[0].rate_base) if rows else "sent"} '
            f"(bounced: of sent)</caption><thead><tr><th scope=\"col\">Figure</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def stats_page(rows: list[IssueStats]) -> str:
    table = table_html(rows) if rows else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Digest stats · Weekly AI Tool Verdicts</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;margin:1.5rem auto;max-width:60rem;padding:0 1rem;color:#1f2328;background:#fff}}
.axis{{font-size:12px;fill:#59636e}}.muted{{color:#59636e}}ul.legend{{list-style:none;padding:0;display:flex;gap:1.5rem;flex-wrap:wrap}}
.swatch{{display:inline-block;width:28px;border-top:3px solid;margin-right:.4rem;vertical-align:middle}}.swatch.dashed{{border-top-style:dashed}}
table{{border-collapse:collapse;margin-top:1.5rem;font-variant-numeric:tabular-nums}}th,td{{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:right}}
th[scope=row],caption{{text-align:left}}caption{{color:#59636e;padding:.4rem 0}}</style></head>
<body><h1>How the issues did</h1>
<p class="muted">Human opens exclude image proxies and Apple Mail Privacy Protection, drawn apart as machine-only opens.
Votes are readers' standing Ship/Skip votes cast from the issue's email; a voter counts as a clicker, once.</p>
{chart_svg(rows)}{table}</body></html>"""
