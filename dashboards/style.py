"""How the dashboard looks: its style sheet, the page template that carries it, and the verdict colours.

Plain constants, nothing computed: the components name these classes (``card``, ``badge``,
``table.data``...), the figures use the colours.
"""

from __future__ import annotations

from monitor.core.verdicts import Verdict

#: A verdict's colour in badges, heatmap cells and verdict-change markers.
VERDICT_COLOURS: dict[Verdict, str] = {
    Verdict.HEALTHY: "#2e7d32",
    Verdict.WATCH: "#f0a202",
    Verdict.NEEDS_RETRAINING: "#c62828",
    Verdict.INSUFFICIENT_DATA: "#9e9e9e",
}
#: The badge of a class without a verdict (or with a value that is not one).
NO_VERDICT_COLOUR = "#bcccdc"
#: A candidate comparison's verdict badge (``verdict-promote``... classes in :data:`CSS`).
COMPARISON_COLOURS: dict[str, str] = {"promote": "#2e7d32", "reject": "#c62828", "insufficient": "#627d98"}

CSS = (
    """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2933; background: #f5f7fa; }
.shell { max-width: 1400px; margin: 0 auto; padding: 0 16px 32px; }
.topbar { display: flex; align-items: baseline; gap: 24px; padding: 12px 0; border-bottom: 1px solid #d9e2ec; }
.topbar h1 { font-size: 20px; margin: 0; }
.nav a { margin-right: 16px; color: #334e68; text-decoration: none; padding: 4px 2px; }
.nav a.active { border-bottom: 3px solid #2f80ed; font-weight: 600; }
.filters { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-end; padding: 12px 0; }
.filters .control { display: flex; flex-direction: column; gap: 4px; min-width: 180px; }
.filters .control.wide { min-width: 340px; flex: 1; }
.control > label, .control > .caption { font-size: 12px; color: #627d98; text-transform: uppercase; letter-spacing: .04em; }
.controls-row { display: flex; flex-wrap: wrap; gap: 24px; align-items: center; margin: 8px 0; }
.controls-row .radio label { margin-right: 10px; }
.card { background: white; border: 1px solid #d9e2ec; border-radius: 6px; padding: 12px 16px; margin: 12px 0; }
.card h2 { font-size: 16px; margin: 0 0 8px; }
.summary { display: flex; flex-wrap: wrap; gap: 8px 20px; align-items: center; }
.muted { color: #627d98; font-size: 13px; }
.evidence { font-size: 14px; line-height: 1.8; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: white; font-size: 12px; white-space: nowrap; background: #627d98; }
"""
    + "".join(f".badge.verdict-{name} {{ background: {colour}; }}\n" for name, colour in COMPARISON_COLOURS.items())
    + """table.data { border-collapse: collapse; width: 100%; font-size: 13px; }
table.data th { text-align: left; color: #486581; border-bottom: 2px solid #d9e2ec; padding: 4px 8px; position: sticky; top: 0; background: white; }
table.data td { border-bottom: 1px solid #f0f4f8; padding: 4px 8px; vertical-align: top; white-space: nowrap; }
table.data td:last-child { white-space: normal; }
table.data.narrow { width: auto; min-width: 360px; }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.scroll { max-height: 520px; overflow-y: auto; }
a.export { font-size: 12px; color: #486581; display: inline-block; margin-top: 4px; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.gallery figure { margin: 0; width: 136px; text-align: center; font-size: 12px; }
.gallery img { width: 128px; height: 128px; object-fit: contain; border: 1px solid #d9e2ec; image-rendering: pixelated;
  background: #f0f4f8 url("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='128' height='128'%3E%3Ctext x='64' y='68' font-family='sans-serif' font-size='12' fill='%23829ab1' text-anchor='middle'%3Eloading%E2%80%A6%3C/text%3E%3C/svg%3E") center no-repeat; }
.empty { text-align: center; padding: 48px 16px; }
.empty code { background: #e4e7eb; padding: 2px 6px; border-radius: 4px; }
.notice { background: #fff4e5; border: 1px solid #f0a202; border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
"""
)

INDEX_STRING = (
    "<!DOCTYPE html>\n<html>\n<head>\n{%metas%}\n<title>{%title%}</title>\n{%favicon%}\n{%css%}\n<style>"
    + CSS
    + "</style>\n</head>\n<body>\n{%app_entry%}\n<footer>\n{%config%}\n{%scripts%}\n{%renderer%}\n</footer>\n</body>\n</html>"
)
