"""Self-contained HTML reports: every figure is embedded (base64 PNG), no external assets,
so ``report.html`` opens offline in any browser and can be mailed or archived as one file."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d3557;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.8;font-size:13px}
main{padding:18px 28px;max-width:1400px}
section{background:#fff;border-radius:8px;padding:14px 18px;margin:0 0 16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:17px;margin:0 0 10px;color:#1d3557}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #e3e6ea;border-radius:6px;padding:8px 12px;min-width:150px}
.card .v{font-size:20px;font-weight:600}.card .k{font-size:12px;color:#5b6572}
.card.ok{border-color:#2a9d8f}.card.bad{border-color:#e63946}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #e3e6ea;padding:4px 8px;text-align:right}
th{background:#f0f2f5}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:6px 10px 6px 0;vertical-align:top}figure img{max-width:100%;border:1px solid #e3e6ea}
figcaption{font-size:12px;color:#5b6572;max-width:640px}
pre{background:#f0f2f5;padding:8px;font-size:12px;overflow:auto}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and len(v) > 8:
        return f"[{len(v)} values]"
    return html.escape(str(v))


def embed_png(path: str | Path) -> str:
    """``data:`` URI of a PNG file."""
    data = Path(path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


@dataclass
class Section:
    title: str
    parts: list[str] = field(default_factory=list)

    def text(self, s: str) -> "Section":
        self.parts.append(f"<p>{html.escape(s)}</p>")
        return self

    def cards(self, items: Mapping[str, Any], good: Mapping[str, bool] | None = None) -> "Section":
        """Key figures as cards; ``good[k]`` colours a card green/red against its target."""
        good = good or {}
        cs = []
        for k, v in items.items():
            cls = "" if k not in good else (" ok" if good[k] else " bad")
            cs.append(f'<div class="card{cls}"><div class="v">{_fmt(v)}</div><div class="k">{html.escape(k)}</div></div>')
        self.parts.append(f'<div class="cards">{"".join(cs)}</div>')
        return self

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> "Section":
        if not rows:
            return self.text("(no rows)")
        cols = list(columns or rows[0].keys())
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")
        return self

    def figure(self, png: str | Path, caption: str = "", width: int | None = None) -> "Section":
        if not Path(png).is_file():
            return self.text(f"(figure missing: {Path(png).name})")
        w = f' style="width:{width}px"' if width else ""
        self.parts.append(
            f'<figure><img src="{embed_png(png)}"{w} alt="{html.escape(caption)}"/>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
        return self

    def json(self, obj: Any) -> "Section":
        self.parts.append(f"<pre>{html.escape(json.dumps(obj, indent=2, default=float))}</pre>")
        return self


class HtmlReport:
    """Collects sections and writes one self-contained HTML file."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.sections: list[Section] = []

    def section(self, title: str) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s

    def render(self) -> str:
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        body = "".join(f"<section><h2>{html.escape(s.title)}</h2>{''.join(s.parts)}</section>" for s in self.sections)
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{html.escape(self.title)}</h1><p>{html.escape(self.subtitle)} &middot; generated {stamp}</p></header>"
            f"<main>{body}</main></body></html>"
        )

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".html.tmp")
        tmp.write_text(self.render(), encoding="utf-8")
        tmp.replace(path)
        return path


def flatten_metrics(d: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``("a.b", 1)``: for metric tables."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from flatten_metrics(v, key + ".")
        else:
            yield key, v
