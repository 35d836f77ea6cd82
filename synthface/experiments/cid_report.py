"""A self-contained HTML page from the CID experiment's markdown report (plot embedded)."""

from __future__ import annotations

import base64


def report_html(md: str, png: bytes) -> str:
    """A self-contained page: the markdown's text in <pre>-free HTML with the plot embedded."""
    import html
    body = []
    in_table = False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set(line) <= set("|-"):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            body.append(f'<img alt="metrics versus rho" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
        elif line.strip():
            text = html.escape(line.rstrip(" ")).replace("**", "")
            body.append(f"<p>{text}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
             "margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>CID experiment</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")
