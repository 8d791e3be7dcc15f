"""An evidence pack's index, rendered as HTML and as Markdown (recorded text escaped)."""

from __future__ import annotations

import html
import re
from typing import Any

from hoopgw.evidence.model import (
    LISTED_TEXT_CHARS,
    MANIFEST,
    chains_text,
    describe_checkpoint,
    grants_text,
    reviews_text,
)

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}code,.mono{font-family:ui-monospace,monospace;font-size:.9em}
.mono{white-space:pre-wrap;word-break:break-all}
.ok,.failed{padding:.8em 1em;border-radius:4px;font-weight:600;font-size:1.1em}
.ok{background:#e6f4ea;border:2px solid #2e7d32;color:#1b5e20}
.failed{background:#fdecea;border:3px solid #c62828;color:#b71c1c;font-size:1.4em}
ul{margin:0;padding-left:1.2em}
"""


def _status_line(doc: dict[str, Any]) -> str:
    verification = doc["verification"]
    if verification["ok"]:
        return (
            f"VERIFIED: the audit chain is intact ({verification['checked']} records, each"
            " record linked by its hash to the one before: a changed, reordered or removed"
            f" record up to record {verification['head_seq']} would show). "
            + _tail_text(verification)
        )
    if verification["chain_ok"] and not verification["checkpoint_problem"]:
        return (
            f"INCOMPLETE: {verification['journal_problem']}. Start the gateway, which appends"
            " them, and make the pack again."
        )
    if verification["chain_ok"]:
        return (
            "FAILED VERIFICATION: the audit log does not match its latest checkpoint"
            f" — {verification['checkpoint_problem']}. Treat this evidence as unreliable."
        )
    return (
        f"FAILED VERIFICATION: the audit chain breaks at record {verification['first_bad_seq']}"
        f" — {verification['problem']}. Treat this evidence as unreliable."
    )


def _tail_text(verification: dict[str, Any]) -> str:
    """What the chain alone cannot prove: that no record was removed from its end."""
    checkpoint = verification["checkpoint"]
    if checkpoint is None:
        return (
            "Without a signed checkpoint, removal of the newest records cannot be detected"
            " (configure [gateway] signing_key so that checkpoints are written)."
        )
    return (
        f"The log matches the signed checkpoint of record {checkpoint['seq']}"
        f" ({checkpoint['time']}): nothing up to it was removed; removal of newer records"
        " cannot be detected."
    )


def render_html(doc: dict[str, Any]) -> str:
    """The pack's ``index.html`` for a summary document; every recorded value is escaped."""
    e = html.escape

    def cell(value: Any) -> str:
        return e("-" if value is None or value == "" else str(value))

    def link(file: str) -> str:
        return f'<a href="{e(file)}">{e(file)}</a>'

    controls = "".join(
        f"<tr><td><b>{e(c['id'])}</b><br>{e(c['title'])}</td>"
        f"<td><ul>{''.join(f'<li>{e(line)}</li>' for line in c['evidence'])}</ul></td>"
        f"<td>{'<br>'.join(link(f) for f in c['files'])}</td></tr>"
        for c in doc["controls"]
    )
    policies = "".join(
        f"<tr><td>{e(p['connection'])}</td><td>{e(', '.join(p['plugins']) or 'none')}</td>"
        f'<td><a href="{e(p["file"])}">{e(p["file"])}</a></td>'
        f'<td class="mono">{e(p["sha256"])}</td></tr>'
        for p in doc["policies"]
    )
    verdicts = "".join(
        f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in doc["commands"]["by_verdict"].items()
    )
    blocked = "".join(
        f'<tr><td class="mono">{e(b["session_id"])} #{cell(b["seq"])}</td>'
        f"<td>{cell(b['received_at'])}</td>"
        f'<td class="mono">{e(_shorten(b["text"]))}</td>'
        f"<td>{cell(b['rule'])}</td><td>{cell(b['reason'])}</td></tr>"
        for b in doc["commands"]["blocked_listed"]
    )
    blocked_table = (
        "<table><tr><th>session #command</th><th>received</th><th>statement</th><th>rule</th>"
        f"<th>reason</th></tr>{blocked}</table>"
        if blocked
        else "<p>No command was blocked in this range.</p>"
    )
    verification = doc["verification"]
    status_class = "ok" if verification["ok"] else "failed"
    since, until = doc["range"]["since"], doc["range"]["until"] or doc["generated_at"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hoopgw evidence pack {e(since)} to {e(until)}</title>
<style>{_CSS}</style></head>
<body>
<h1>hoopgw evidence pack</h1>
<p class="{status_class}">{e(_status_line(doc))}</p>
<p>Records from <b>{e(since)}</b> up to <b>{e(until)}</b> (UTC);
generated {cell(doc["generated_at"])} by hoopgw {e(doc["gateway_version"])}
from config <code>{e(doc["config"]["file"])}</code>
(SHA-256 <span class="mono">{e(doc["config"]["sha256"])}</span>).
Every file of this pack is listed with its SHA-256 in <a href="{MANIFEST}">{MANIFEST}</a>
(check with <code>sha256sum -c {MANIFEST}</code> in this folder).</p>

<h2>Controls (NIST SP 800-53)</h2>
<table><tr><th>control</th><th>demonstrated by</th><th>files</th></tr>{controls}</table>

<h2>Chain verification</h2>
<table>
<tr><th>result</th><td>{"intact" if verification["ok"] else "FAILED"}</td></tr>
<tr><th>records checked</th>
<td>{verification["checked"]} of {verification["records_read"]}</td></tr>
<tr><th>first bad record</th><td>{cell(verification["first_bad_seq"])}</td></tr>
<tr><th>problem</th><td>{cell(verification["problem"])}</td></tr>
<tr><th>chain head</th>
<td class="mono">{verification["head_seq"]} {cell(verification["head_hash"])}</td></tr>
<tr><th>latest checkpoint</th><td>{e(describe_checkpoint(verification))}</td></tr>
</table>
<p>{e(chains_text(verification))}</p>

<h2>Sessions and commands</h2>
<p>{e(_activity_line(doc))}
Lists: <a href="sessions.csv">sessions.csv</a>, <a href="sessions.json">sessions.json</a>,
<a href="commands.jsonl">commands.jsonl</a>.</p>
<table><tr><th>verdict</th><th>commands</th></tr>{verdicts}</table>
<h2>Blocked commands</h2>
{blocked_table}

<h2>Reviews and access grants</h2>
<p>{e(reviews_text(doc))}<br>{e(grants_text(doc))} Every event: {link("approvals.csv")}.</p>

<h2>Policies in force</h2>
<p>As configured when the pack was made; credentials are left out.</p>
<table><tr><th>connection</th><th>plugins</th><th>excerpt</th><th>SHA-256</th></tr>{policies}</table>
</body></html>
"""


def render_markdown(doc: dict[str, Any]) -> str:
    """The pack's ``index.md`` for a summary document; recorded values cannot inject markup."""
    m = _md
    verification = doc["verification"]
    since, until = doc["range"]["since"], doc["range"]["until"] or doc["generated_at"]
    lines = [
        "# hoopgw evidence pack",
        "",
        f"**{m(_status_line(doc))}**",
        "",
        f"Records from {m(since)} up to {m(until)} (UTC); generated {m(doc['generated_at'])} by "
        f"hoopgw {m(doc['gateway_version'])} from config `{m(doc['config']['file'])}` "
        f"(SHA-256 `{doc['config']['sha256']}`). Every file of this pack is listed with its "
        f"SHA-256 in [{MANIFEST}]({MANIFEST}) (check with `sha256sum -c {MANIFEST}` in this "
        "folder).",
        "",
        "## Controls (NIST SP 800-53)",
        "",
        "| control | demonstrated by | files |",
        "|---|---|---|",
    ]
    for control in doc["controls"]:
        evidence = "<br>".join(m(line) for line in control["evidence"])
        files = ", ".join(f"[{m(f)}]({f})" for f in control["files"])
        lines.append(f"| **{control['id']}** {m(control['title'])} | {evidence} | {files} |")
    lines += [
        "",
        "## Chain verification",
        "",
        f"- result: {'intact' if verification['ok'] else 'FAILED'}",
        f"- records checked: {verification['checked']} of {verification['records_read']}",
        f"- first bad record: {m(verification['first_bad_seq'])}",
        f"- problem: {m(verification['problem'])}",
        f"- chain head: {verification['head_seq']} `{verification['head_hash'] or '-'}`",
        f"- latest checkpoint: {m(describe_checkpoint(verification))}",
        "",
        *([m(chains_text(verification)), ""] if chains_text(verification) else []),
        "## Sessions and commands",
        "",
        f"{m(_activity_line(doc))} Lists: [sessions.csv](sessions.csv), "
        "[sessions.json](sessions.json), [commands.jsonl](commands.jsonl).",
        "",
        "| verdict | commands |",
        "|---|---|",
        *(f"| {m(k)} | {v} |" for k, v in doc["commands"]["by_verdict"].items()),
        "",
        "## Blocked commands",
        "",
    ]
    blocked = doc["commands"]["blocked_listed"]
    if blocked:
        lines += [
            "| session #command | received | statement | rule | reason |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {m(b['session_id'])} #{m(b['seq'])} | {m(b['received_at'])} | "
            f"{m(_shorten(b['text']))} | {m(b['rule'])} | {m(b['reason'])} |"
            for b in blocked
        ]
    else:
        lines.append("No command was blocked in this range.")
    lines += [
        "",
        "## Reviews and access grants",
        "",
        f"- {m(reviews_text(doc))}",
        f"- {m(grants_text(doc))}",
        "- every event: [approvals.csv](approvals.csv)",
        "",
        "## Policies in force",
        "",
        "As configured when the pack was made; credentials are left out.",
        "",
        "| connection | plugins | excerpt | SHA-256 |",
        "|---|---|---|---|",
        *(
            f"| {m(p['connection'])} | {m(', '.join(p['plugins']) or 'none')} | "
            f"[{m(p['file'])}]({p['file']}) | `{p['sha256']}` |"
            for p in doc["policies"]
        ),
        "",
    ]
    return "\n".join(lines)


def _activity_line(doc: dict[str, Any]) -> str:
    sessions = doc["sessions"]
    return (
        f"Sessions started in range: {sessions['count']} ({sessions['ended']} ended), "
        f"identities: {len(sessions['identities'])}; commands received: "
        f"{doc['commands']['count']}."
    )


def _shorten(text: Any) -> str:
    text = " ".join(str(text).split())
    if len(text) > LISTED_TEXT_CHARS:
        return text[: LISTED_TEXT_CHARS - 1] + "…"
    return text


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md(value: Any) -> str:
    """``value`` as inert Markdown text: on one line, HTML escaped, markup characters quoted."""
    text = "-" if value is None or value == "" else " ".join(str(value).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))
