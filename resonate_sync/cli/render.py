"""What the client commands print: tables for people, JSON documents with ``--json``, error lines.

Times are shown as UTC ISO 8601; data as text when its bytes are printable UTF-8, else as
``base64:…``; in JSON, a param or value keeps the wire's base64 ``data`` and gains ``text``
when its bytes are UTF-8.
"""

import base64
import binascii
import json
from datetime import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import typer

from resonate_sync.models import Value, unstructure
from resonate_sync.times import format_ms

__all__ = [
    "callback_table",
    "columns",
    "fail",
    "lock_table",
    "next_page_hint",
    "page_document",
    "pairs_text",
    "promise_table",
    "schedule_table",
    "sections",
    "show",
    "status_table",
    "task_table",
    "when",
    "with_text",
]


def show(document: Any, heading: str = "", table: str = "", *, as_json: bool = False) -> None:
    """Print ``document`` as JSON, or the heading and table for people."""
    if as_json:
        typer.echo(json.dumps(with_text(document), indent=2, ensure_ascii=False))
        return
    for part in (heading, table):
        if part:
            typer.echo(part)


def fail(message: str) -> typer.Exit:
    """Print ``Error: message`` on stderr; returns the exit (code 2, a usage or configuration error) to raise."""
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(2)


def when(ms: Optional[int]) -> str:
    """A time in ms since the epoch as UTC ISO 8601 (the number itself when out of range)."""
    if ms is None:
        return ""
    try:
        return format_ms(ms)
    except (OverflowError, ValueError):
        return str(ms)


_VALUE_KEYS = frozenset({"param", "value", "promiseParam"})


def with_text(document: Any) -> Any:
    """``document`` with ``text`` beside the base64 ``data`` of every param and value whose bytes are UTF-8."""
    if isinstance(document, list):
        return [with_text(item) for item in document]
    if not isinstance(document, dict):
        return document
    shown = {}
    for key, item in document.items():
        item = with_text(item)
        if key in _VALUE_KEYS and isinstance(item, dict) and isinstance(item.get("data"), str):
            try:
                item = {**item, "text": base64.b64decode(item["data"], validate=True).decode("utf-8")}
            except (binascii.Error, UnicodeDecodeError):
                pass  # binary: the base64 is all there is to show
        shown[key] = item
    return shown


def _text(value: Value) -> str:
    """Data as text when it is printable UTF-8, else as ``base64:…``."""
    raw = value.raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\n" for c in text):
        return text
    return f"base64:{value.data}"


def pairs_text(pairs: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(pairs.items()))


def _fields(rows: Sequence[Tuple[str, Any]]) -> str:
    """A two-column table of the rows that have a value."""
    shown = [(key, str(value)) for key, value in rows if value not in (None, "")]
    width = max(len(key) for key, _ in shown)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in shown)


def columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [headers, *rows])


def status_table(instances: Sequence[Mapping[str, Any]], now: float) -> str:
    """One row per Services API stats document: id, version, store, role, uptime, requests, errors,
    average latency. ROLE is a JetStream replica's (``leader`` or ``standby``, with the stream
    sequence it applied), ``-`` for a server that is the only one on its store."""
    rows = []
    for document in instances:
        endpoint = (document.get("endpoints") or [{}])[0]
        metadata = document.get("metadata") if isinstance(document.get("metadata"), Mapping) else {}
        role = str(metadata.get("role") or "-")
        if role != "-" and metadata.get("applied_seq"):
            role += f"@{metadata['applied_seq']}"
        rows.append([
            str(document.get("id", "")), str(document.get("version", "")), str(metadata.get("store") or "?"), role,
            _uptime(document.get("started"), now), str(endpoint.get("num_requests", 0)),
            str(endpoint.get("num_errors", 0)), f"{endpoint.get('average_processing_time', 0) / 1e6:.3f} ms",
        ])  # fmt: skip
    return columns(["ID", "VERSION", "STORE", "ROLE", "UPTIME", "REQUESTS", "ERRORS", "AVG LATENCY"], rows)


def _uptime(started: Any, now: float) -> str:
    try:
        seconds = int(now - datetime.fromisoformat(str(started).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return "?"
    days, seconds = divmod(max(0, seconds), 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return (f"{days}d" if days else "") + (f"{hours}h" if days or hours else "") + f"{minutes}m{seconds}s"


def _value_rows(name: str, value: Value) -> List[Tuple[str, Any]]:
    return [(name, _text(value) if value.data else ""), (f"{name} headers", pairs_text(value.headers))]


def promise_table(p) -> str:
    return _fields([
        ("id", p.id),
        ("state", p.state),
        ("timeout", when(p.timeout)),
        *_value_rows("param", p.param),
        *_value_rows("value", p.value),
        ("tags", pairs_text(p.tags)),
        ("idempotency key (create)", p.idempotency_key_for_create),
        ("idempotency key (complete)", p.idempotency_key_for_complete),
        ("created on", when(p.created_on)),
        ("completed on", when(p.completed_on)),
    ])


def schedule_table(s) -> str:
    return _fields([
        ("id", s.id),
        ("description", s.description),
        ("cron", s.cron),
        ("tags", pairs_text(s.tags)),
        ("promise id", s.promise_id),
        ("promise timeout", f"{s.promise_timeout} ms"),
        *_value_rows("promise param", s.promise_param),
        ("promise tags", pairs_text(s.promise_tags)),
        ("next run", when(s.next_run_time)),
        ("last run", when(s.last_run_time)),
        ("idempotency key", s.idempotency_key),
        ("created on", when(s.created_on)),
    ])


def task_table(t) -> str:
    return _fields([
        ("id", t.id),
        ("counter", t.counter),
        ("root promise", t.root_promise_id),
        ("process id", t.process_id),
        ("timeout", when(t.timeout)),
        ("created on", when(t.created_on)),
        ("completed on", when(t.completed_on)),
    ])


def lock_table(lock) -> str:
    return _fields([
        ("resource id", lock.resource_id),
        ("execution id", lock.execution_id),
        ("process id", lock.process_id),
        ("ttl", f"{lock.ttl} ms"),
        ("expires at", when(lock.expires_at)),
    ])


def callback_table(callback) -> str:
    return _fields([
        ("id", callback.id),
        ("promise id", callback.promise_id),
        ("root promise", callback.root_promise_id),
        ("timeout", when(callback.timeout)),
        ("created on", when(callback.created_on)),
    ])


def sections(table: str, *named: Tuple[str, Callable[[Any], str], Any]) -> str:
    """``table``, then for each ``(name, format, item)`` whose item is not None, ``format(item)`` under ``name:``."""
    return table + "".join(f"\n\n{name}:\n{show(item)}" for name, show, item in named if item is not None)


def page_document(key: str, items: Sequence[Any], cursor: Optional[str]) -> Dict[str, Any]:
    document: Dict[str, Any] = {key: [unstructure(item) for item in items]}
    if cursor:
        document["cursor"] = cursor
    return document


def next_page_hint(command: str, cursor: Optional[str]) -> str:
    return f"more: resonate {command} --cursor {cursor}" if cursor else ""
