"""Configuration: Go durations, the four layers, and error messages that name their source."""

import json
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import resonate_sync.config
from resonate_sync.config import (
    DEFAULT_SERVE_STORE_PATH,
    MODES,
    SETTINGS,
    SETTINGS_BY_FIELD,
    Config,
    ConfigError,
    explain_config,
    find_config_file,
    format_config,
    format_go_duration,
    jetstream_stream_name,
    load_config,
    parse_go_bool,
    parse_go_duration,
)

SAMPLE_FILE = Path(__file__).resolve().parents[2] / "conf" / "resonate.yaml"

# For every key: (YAML value, expected), (env text, expected), (flag text, expected). Each layer's
# value differs from the layer below it and from the default, so a layer that is ignored shows.
LAYER_SAMPLES = {
    "nats_enabled": ((False, False), ("true", True), ("false", False)),
    "nats_addr": (("nats://file:1", "nats://file:1"), ("nats://env:2", "nats://env:2"),
                  ("tls://u:p@flag:3", "tls://u:p@flag:3")),
    "nats_subject": (("file.subject", "file.subject"), ("env.subject", "env.subject"),
                     ("flag.subject", "flag.subject")),
    "nats_timeout_ms": (("1s", 1_000), ("2m", 120_000), ("500ms", 500)),
    "nats_queue": (("file-q", "file-q"), ("env-q", "env-q"), ("flag-q", "flag-q")),
    "peer_window_ms": (("1s", 1000), ("50ms", 50), ("0", 0)),
    "nats_tls_ca": (("file-ca.pem", "file-ca.pem"), ("env-ca.pem", "env-ca.pem"), ("flag-ca.pem", "flag-ca.pem")),
    "nats_tls_cert": (("file.crt", "file.crt"), ("env.crt", "env.crt"), ("flag.crt", "flag.crt")),
    "nats_tls_key": (("file.key", "file.key"), ("env.key", "env.key"), ("flag.key", "flag.key")),
    "nats_tls_verify": ((False, False), ("true", True), ("false", False)),
    "nats_creds": (("file.creds", "file.creds"), ("env.creds", "env.creds"), ("flag.creds", "flag.creds")),
    "nats_nkey": (("file.nk", "file.nk"), ("env.nk", "env.nk"), ("flag.nk", "flag.nk")),
    "embedded_nats": (("never", "never"), ("always", "always"), ("auto", "auto")),
    "store_path": (("file.journal", "file.journal"), ("env.journal", "env.journal"),
                   ("flag.journal", "flag.journal")),
    "fsync": (("never", "never"), ("always", "always"), ("never", "never")),
    "snapshot_every": ((1, 1), ("2", 2), ("3", 3)),
    "store_kind": (("jetstream", "jetstream"), ("file", "file"), ("JetStream", "jetstream")),
    "store_jetstream_stream": (("FILE_S", "FILE_S"), ("env-s", "env-s"), ("flag_s", "flag_s")),
    "store_jetstream_replicas": ((3, 3), ("5", 5), ("1", 1)),
    "store_jetstream_lease_ms": (("5s", 5_000), ("1500ms", 1_500), ("1m", 60_000)),
    "workers": ((1, 1), ("2", 2), ("3", 3)),
    "max_pending": ((10, 10), ("20", 20), ("30", 30)),
    "tick_ms": (("5s", 5_000), ("6s", 6_000), ("1m30s", 90_000)),
    "batch_size": ((1, 1), ("2", 2), ("3", 3)),
    "href_base": (("http://file", "http://file"), ("http://env:1", "http://env:1"),
                  ("https://flag:2", "https://flag:2")),
    "task_claim_timeout_ms": (("1s", 1_000), ("2s", 2_000), ("0", 0)),
    "task_retry_timeout_ms": (("4s", 4_000), ("5s", 5_000), ("2.5s", 2_500)),
    "delivery_allow": (("a.>", "a.>"), ("b.*", "b.*"), ("c.>,d.x", "c.>,d.x")),
    "delivery_poll_prefix": (("a", "a"), ("b.c", "b.c"), ("sdk.recv", "sdk.recv")),
    "events_subject": (("file.events", "file.events"), ("env.ev", "env.ev"), ("resonate.events", "resonate.events")),
    "metrics_addr": (("127.0.0.1:1", "127.0.0.1:1"), ("0.0.0.0:2", "0.0.0.0:2"), ("[::1]:0", "[::1]:0")),
    "log_level": (("debug", "debug"), ("error", "error"), ("warn", "warning")),
    "log_format": (("json", "json"), ("text", "text"), ("JSON", "json")),
}


def write_yaml(path: Path, values: dict) -> Path:
    """Write `values` ({dotted.key: value}) as a nested YAML document (JSON is YAML)."""
    document: dict = {}
    for key, value in values.items():
        node = document
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def config_error(**kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    return str(info.value)


class TestParseGoDuration:
    @pytest.mark.parametrize(
        ("text", "ms"),
        [
            ("0", 0), ("-0", 0), ("0s", 0), ("10s", 10_000), ("1m30s", 90_000), ("500ms", 500),
            ("2.5s", 2_500), (".5s", 500), ("5.s", 5_000), ("1h", 3_600_000), ("+1s", 1_000),
            ("1h2m3s4ms", 3_723_004), ("1000000ns", 1), ("1000us", 1), ("1000µs", 1),
            ("1000μs", 1), ("1.5m", 90_000), ("30m0s", 1_800_000),
        ],
    )
    def test_valid(self, text, ms):
        """Go duration syntax (numbers with fractions and units, or a lone 0) gives whole milliseconds."""
        assert parse_go_duration(text) == ms

    @pytest.mark.parametrize(
        ("text", "rule"),
        [
            ("", "not a duration"),
            ("ten", "not a duration (examples: 10s, 1m30s, 500ms)"),
            ("10", "needs a unit"),
            ("1.5", "needs a unit"),
            ("1x", 'unknown unit "x"'),
            ("1S", 'unknown unit "S"'),
            ("s", "not a duration"),
            (".s", "not a duration"),
            ("1s 2s", 'unknown unit "s "'),
            ("-5s", "negative"),
            ("1500us", "whole number of milliseconds"),
            ("1ns", "whole number of milliseconds"),
            ("3000000h", "too long"),
            ("١s", "not a duration"),  # Arabic-Indic digit: Go accepts ASCII digits only
        ],
    )
    def test_invalid(self, text, rule):
        """Anything else is a ValueError that quotes the text and states the rule."""
        with pytest.raises(ValueError) as info:
            parse_go_duration(text)
        assert rule in str(info.value)
        assert json.dumps(text, ensure_ascii=False) in str(info.value)

    @given(st.integers(min_value=0, max_value=(2**63 - 1) // 1_000_000))
    def test_format_round_trips(self, ms):
        """Up to Go's int64-nanosecond limit, format_go_duration's output parses back to the same ms."""
        assert parse_go_duration(format_go_duration(ms)) == ms

    @pytest.mark.parametrize(("ms", "text"), [(0, "0"), (500, "500ms"), (90_000, "1m30s"), (3_600_000, "1h")])
    def test_format_is_short(self, ms, text):
        """format_go_duration leaves out zero components."""
        assert format_go_duration(ms) == text


class TestParseGoBool:
    @pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
    def test_true(self, text):
        """The spellings Go's strconv.ParseBool reads as true are true."""
        assert parse_go_bool(text) is True

    @pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
    def test_false(self, text):
        """The spellings Go's strconv.ParseBool reads as false are false."""
        assert parse_go_bool(text) is False

    @pytest.mark.parametrize("text", ["", "yes", "no", "on", "tRUE", " true"])
    def test_other(self, text):
        """Any other text is an error suggesting true or false."""
        with pytest.raises(ValueError, match="use true or false"):
            parse_go_bool(text)


class TestDefaults:
    def test_config_defaults_are_dev(self):
        """Config() holds the documented defaults, which are dev mode's."""
        assert Config() == Config(
            nats_enabled=True, nats_addr="nats://localhost:4222", nats_subject="resonate.server",
            nats_timeout_ms=10_000, nats_queue="", store_path=None, fsync="always",
            snapshot_every=100_000, embedded_nats="auto", workers=8, max_pending=1024,
            tick_ms=1_000, batch_size=100, task_claim_timeout_ms=60_000,
            task_retry_timeout_ms=15_000, delivery_allow="", delivery_poll_prefix="resonate.recv", href_base="http://localhost:8001",
            metrics_addr="", log_level="info", log_format="text",
        )
        assert load_config(mode="dev") == Config()

    def test_serve_journals_and_never_embeds(self):
        """serve differs from dev only in journaling to the default path, not embedding NATS and serving metrics."""
        assert load_config(mode="serve") == attrs.evolve(
            Config(), store_path=DEFAULT_SERVE_STORE_PATH, embedded_nats="never", metrics_addr="127.0.0.1:9090"
        )

    def test_unknown_mode(self):
        """A mode other than dev or serve is a programming error."""
        with pytest.raises(ValueError, match="unknown mode"):
            load_config(mode="prod")

    def test_every_field_has_a_setting(self):
        """Every Config field has one row in SETTINGS, so every key has a file key, env var and flag."""
        assert sorted(s.field for s in SETTINGS) == sorted(a.name for a in attrs.fields(Config))
        assert len({s.flag for s in SETTINGS}) == len({s.env for s in SETTINGS}) == len(SETTINGS)

    def test_seed_names(self):
        """The Go seed's keys, env vars and flags are spelled exactly as the seed spells them."""
        assert [(s.key, s.env, s.flag) for s in SETTINGS if s.key.startswith("api.")][:4] == [
            ("api.subsystems.nats.enabled", "RESONATE_API_NATS_ENABLE", "--api-nats-enable"),
            ("api.subsystems.nats.addr", "RESONATE_API_NATS_ADDR", "--api-nats-addr"),
            ("api.subsystems.nats.subject", "RESONATE_API_NATS_SUBJECT", "--api-nats-subject"),
            ("api.subsystems.nats.timeout", "RESONATE_API_NATS_TIMEOUT", "--api-nats-timeout"),
        ]
        assert SETTINGS_BY_FIELD["store_path"].env == "RESONATE_STORE_PATH"


class TestSampleFile:
    @pytest.mark.parametrize("mode", MODES)
    def test_loads_to_defaults(self, mode):
        """conf/resonate.yaml loads without error to exactly the defaults, in both modes."""
        assert load_config(mode=mode, config_file=SAMPLE_FILE) == load_config(mode=mode)

    @pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.field)
    def test_documents_every_key(self, setting):
        """conf/resonate.yaml names every key with its env var and flag."""
        text = SAMPLE_FILE.read_text(encoding="utf-8")
        assert f"{setting.path[-1]}:" in text
        assert setting.env in text
        assert setting.flag in text


class TestModuleDocstring:
    @pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.field)
    def test_table_lists_every_setting(self, setting):
        """The key table in resonate_sync.config's docstring has each setting's row as implemented."""
        rows = [line.split() for line in resonate_sync.config.__doc__.splitlines()]
        flag = setting.flag + (f"[={setting.kind.metavar}]" if setting.bare else "")
        assert [setting.field, setting.key, setting.env, flag] in rows


class TestPrecedence:
    def test_samples_cover_every_setting(self):
        """The layer samples below exercise every key."""
        assert set(LAYER_SAMPLES) == set(SETTINGS_BY_FIELD)

    @pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.field)
    def test_file_overrides_default(self, setting, tmp_path):
        """A key in the config file replaces that key's default and nothing else."""
        (file_value, expected), _, _ = LAYER_SAMPLES[setting.field]
        path = write_yaml(tmp_path / "c.yaml", {setting.key: file_value})
        assert load_config(config_file=path) == attrs.evolve(Config(), **{setting.field: expected})

    @pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.field)
    def test_env_overrides_file(self, setting, tmp_path):
        """A RESONATE_… environment variable replaces the config file's value of its key."""
        (file_value, _), (env_text, expected), _ = LAYER_SAMPLES[setting.field]
        path = write_yaml(tmp_path / "c.yaml", {setting.key: file_value})
        config = load_config(config_file=path, env={setting.env: env_text})
        assert config == attrs.evolve(Config(), **{setting.field: expected})

    @pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.field)
    def test_flag_overrides_env_and_file(self, setting, tmp_path):
        """A flag replaces both the environment's and the file's value of its key."""
        (file_value, _), (env_text, _), (flag_text, expected) = LAYER_SAMPLES[setting.field]
        path = write_yaml(tmp_path / "c.yaml", {setting.key: file_value})
        config = load_config(
            config_file=path, env={setting.env: env_text}, overrides={setting.field: flag_text}
        )
        assert config == attrs.evolve(Config(), **{setting.field: expected})

    def test_layers_mix_per_key(self, tmp_path):
        """Each key comes from the highest layer that sets it; keys are not all-or-nothing per layer."""
        path = write_yaml(tmp_path / "c.yaml", {"server.workers": 2, "server.maxPending": 5})
        config = load_config(
            mode="serve", config_file=path, env={"RESONATE_MAX_PENDING": "6", "RESONATE_TICK": "2s"},
            overrides={"tick_ms": "3s", "workers": None},
        )
        assert (config.workers, config.max_pending, config.tick_ms) == (2, 6, 3_000)
        assert config.store_path == DEFAULT_SERVE_STORE_PATH

    def test_none_overrides_are_skipped(self):
        """A flag the user did not give (None) leaves the lower layers alone."""
        config = load_config(env={"RESONATE_WORKERS": "3"}, overrides={"workers": None})
        assert config.workers == 3

    def test_empty_env_is_unset(self):
        """An empty environment variable counts as unset, as viper treats it."""
        assert load_config(env={"RESONATE_WORKERS": "", "RESONATE_API_NATS_ADDR": ""}) == Config()

    def test_unknown_env_is_ignored(self):
        """RESONATE_… variables that name no key are ignored (SDKs share the prefix)."""
        assert load_config(env={"RESONATE_URL": "http://x", "RESONATE_API_NATS_ADRR": "x"}) == Config()

    def test_native_override_values(self):
        """Non-string overrides must already have the field's type: ms for durations, bool for booleans."""
        config = load_config(overrides={"nats_timeout_ms": 2_500, "nats_enabled": False, "workers": 4})
        assert (config.nats_timeout_ms, config.nats_enabled, config.workers) == (2_500, False, 4)

    @pytest.mark.parametrize("mode", MODES)
    def test_empty_store_path_means_memory(self, mode, tmp_path):
        """store.path null or "" (file, env or flag) keeps state in memory, even for serve."""
        path = write_yaml(tmp_path / "c.yaml", {"store.path": None})
        assert load_config(mode=mode, config_file=path).store_path is None
        assert load_config(mode=mode, overrides={"store_path": ""}).store_path is None
        path = write_yaml(tmp_path / "c.yaml", {"store.path": ""})
        assert load_config(mode=mode, config_file=path).store_path is None

    def test_choices_ignore_case(self):
        """Choices (log level, fsync, embedded NATS) are read case-insensitively; warn means warning."""
        config = load_config(env={"RESONATE_LOG_LEVEL": "WARN", "RESONATE_FSYNC": "Never"})
        assert (config.log_level, config.fsync) == ("warning", "never")


class TestExplainConfig:
    @pytest.mark.parametrize("field", sorted(LAYER_SAMPLES))
    def test_names_the_layer_each_value_came_from(self, field, tmp_path):
        """Each value's source is the highest layer that set it: default, the file, the variable or the flag."""
        setting = SETTINGS_BY_FIELD[field]
        (file_value, _), (env_text, _), (flag_text, _) = LAYER_SAMPLES[field]
        path = write_yaml(tmp_path / "c.yaml", {setting.key: file_value})
        env, flags = {setting.env: env_text}, {field: flag_text}
        for layers, source in (
            ({}, "default"),
            ({"config_file": path}, str(path)),
            ({"config_file": path, "env": env}, f"env {setting.env}"),
            ({"config_file": path, "env": env, "overrides": flags}, f"flag {setting.flag}"),
        ):
            config, sources = explain_config(mode="serve", **layers)
            assert (config, sources[field]) == (load_config(mode="serve", **layers), source)

    def test_format_config_reads_back(self, tmp_path):
        """format_config writes a config file that loads to the same Config, each line naming its source."""
        flags = {field: flag for field, (_, _, (flag, _)) in LAYER_SAMPLES.items()}
        config, sources = explain_config(mode="dev", overrides=flags)
        text = format_config(config, sources)
        path = tmp_path / "shown.yaml"
        path.write_text(text, encoding="utf-8")
        assert load_config(mode="dev", config_file=path) == config
        assert '      addr: "tls://u:p@flag:3"  # flag --api-nats-addr' in text.splitlines()
        hidden = format_config(config, sources, redact=lambda value: value.replace("u:p@", "***@"))
        assert '      addr: "tls://***@flag:3"  # flag --api-nats-addr' in hidden.splitlines()


class TestConfigFileErrors:
    def test_unknown_top_level_key(self, tmp_path):
        """An unknown top-level key names the file, the key and the known keys."""
        path = write_yaml(tmp_path / "c.yaml", {"stroe.path": "x"})
        message = config_error(config_file=path)
        assert str(path) in message
        assert "unknown key stroe" in message
        assert "did you mean store?" in message

    def test_unknown_nested_key(self, tmp_path):
        """An unknown key deep in the tree is named by its full dotted path."""
        path = write_yaml(tmp_path / "c.yaml", {"api.subsystems.nats.adr": "nats://x"})
        message = config_error(config_file=path)
        assert "unknown key api.subsystems.nats.adr" in message
        assert "did you mean api.subsystems.nats.addr?" in message

    def test_unknown_subsystem(self, tmp_path):
        """Keys the Go server has but this server does not (the HTTP subsystem) are unknown, not ignored."""
        path = write_yaml(tmp_path / "c.yaml", {"api.subsystems.http.addr": ":8001"})
        assert "unknown key api.subsystems.http" in config_error(config_file=path)

    def test_section_must_be_a_mapping(self, tmp_path):
        """A section given a scalar is an error naming the section."""
        path = write_yaml(tmp_path / "c.yaml", {"store": 5})
        assert "store: expected a mapping" in config_error(config_file=path)

    def test_leaf_given_a_mapping(self, tmp_path):
        """A value key given a mapping is a bad value of that key."""
        path = write_yaml(tmp_path / "c.yaml", {"api.subsystems.nats.addr.host": "x"})
        assert "api.subsystems.nats.addr: " in config_error(config_file=path)

    @pytest.mark.parametrize(
        ("key", "value", "rule"),
        [
            ("api.subsystems.nats.timeout", "ten", '"ten" is not a duration (examples: 10s, 1m30s, 500ms)'),
            ("api.subsystems.nats.timeout", 10, "10 is not a duration"),
            ("api.subsystems.nats.timeout", 1.5, "1.5 is not a duration"),
            ("api.subsystems.nats.enabled", "yes", '"yes" is not a boolean'),
            ("api.subsystems.nats.enabled", 1, "1 is not a boolean"),
            ("api.subsystems.nats.addr", "localhost:4222", "is not a NATS URL"),
            ("api.subsystems.nats.addr", "nats://host:99999", "is not a NATS URL"),
            ("api.subsystems.nats.subject", "resonate.*", "wildcard"),
            ("api.subsystems.nats.subject", "a..b", "is not a NATS subject"),
            ("api.subsystems.nats.subject", "", "is not a NATS subject"),
            ("api.subsystems.nats.subject", 5, "5 is not a string"),
            ("api.subsystems.nats.queue", "a b", "is not a queue group name"),
            ("api.subsystems.nats.queue", None, "null is not a string"),
            ("nats.embedded", "sometimes", '"sometimes" is not one of: auto, always, never'),
            ("store.fsync", "sometimes", "is not one of: always, never"),
            ("store.path", 5, "is not a path"),
            ("store.snapshotEvery", 0, "must be an integer >= 1"),
            ("server.workers", "8", '"8" is not an integer'),
            ("server.workers", True, "true is not an integer"),
            ("server.maxPending", -1, "must be an integer >= 1"),
            ("server.tick", "0", "too short; it must be at least 1ms"),
            ("server.batchSize", 2.0, "2.0 is not an integer"),
            ("server.hrefBase", "localhost:8001", "is not an http(s) URL"),
            ("tasks.claimTimeout", "-1s", "negative"),
            ("tasks.retryTimeout", "1.5ms", "whole number of milliseconds"),
            ("log.level", "loud", "is not one of: debug, info, warning, error, critical"),
            ("events.subject", "resonate.events.>", "contains a wildcard"),
            ("events.subject", "$JS.events", "starts with '$'"),
            ("events.subject", "a..b", "is not a NATS subject"),
            ("events.subject", "e" * 256, "at most 255 are allowed"),
        ],
    )
    def test_bad_value_names_key_and_rule(self, key, value, rule, tmp_path):
        """A value that breaks its key's rule names the file, the key and the rule."""
        path = write_yaml(tmp_path / "c.yaml", {key: value})
        message = config_error(config_file=path)
        assert message.startswith(f"{path}: {key}: ")
        assert rule in message

    def test_bad_nats_url_hides_its_password(self, tmp_path):
        """A NATS URL that breaks the rule is echoed with its password hidden: errors reach terminals and logs."""
        path = write_yaml(tmp_path / "c.yaml", {"api.subsystems.nats.addr": "nats://svc:s3cret@host:99999"})
        message = config_error(config_file=path)
        assert '"nats://svc:***@host:99999" is not a NATS URL' in message and "s3cret" not in message

    def test_zero_duration_may_be_a_number(self, tmp_path):
        """A plain 0 is a duration in YAML too (Go accepts "0" without a unit)."""
        path = write_yaml(tmp_path / "c.yaml", {"api.subsystems.nats.timeout": 0})
        assert load_config(config_file=path).nats_timeout_ms == 0

    def test_plain_yaml_scalars(self, tmp_path):
        """Unquoted YAML durations, URLs and booleans read as written."""
        path = tmp_path / "c.yaml"
        path.write_text(
            "api:\n  subsystems:\n    nats:\n      enabled: false\n      timeout: 1m30s\n"
            "      addr: nats://h:1\nserver:\n  tick: 250ms\n",
            encoding="utf-8",
        )
        config = load_config(config_file=path)
        assert (config.nats_enabled, config.nats_timeout_ms, config.nats_addr, config.tick_ms) == (
            False, 90_000, "nats://h:1", 250,
        )

    def test_yaml_syntax_error_names_file_and_line(self, tmp_path):
        """Broken YAML names the file, the problem and the line."""
        path = tmp_path / "c.yaml"
        path.write_text("api:\n  subsystems: [1\n", encoding="utf-8")
        message = config_error(config_file=path)
        assert message.startswith(f"{path}: not valid YAML: ")
        assert "line " in message

    def test_duplicate_key(self, tmp_path):
        """A key given twice is an error rather than last-one-wins."""
        path = tmp_path / "c.yaml"
        path.write_text("log:\n  level: info\n  level: debug\n", encoding="utf-8")
        assert 'duplicate key "level"' in config_error(config_file=path)

    def test_unsafe_tags_are_refused(self, tmp_path):
        """The safe loader refuses Python object tags."""
        path = tmp_path / "c.yaml"
        path.write_text("log: !!python/object/apply:os.system [echo hi]\n", encoding="utf-8")
        assert "not valid YAML" in config_error(config_file=path)

    def test_document_must_be_a_mapping(self, tmp_path):
        """A file that is a list, not a mapping, is an error."""
        path = tmp_path / "c.yaml"
        path.write_text("- 1\n", encoding="utf-8")
        assert "the file: expected a mapping" in config_error(config_file=path)

    @pytest.mark.parametrize("text", ["", "# only comments\n", "store:\n", "api:\n  subsystems:\n"])
    def test_empty_file_and_sections(self, text, tmp_path):
        """An empty file or empty sections leave every default in place."""
        path = tmp_path / "c.yaml"
        path.write_text(text, encoding="utf-8")
        assert load_config(config_file=path) == Config()

    def test_unreadable_file(self, tmp_path):
        """A file that cannot be read names the file."""
        path = tmp_path / "c.yaml"
        path.write_bytes(b"\xff\xfe\x00")
        assert f"{path}: cannot read config file" in config_error(config_file=path)


class TestEnvAndFlagErrors:
    @pytest.mark.parametrize(
        ("name", "text", "rule"),
        [
            ("RESONATE_API_NATS_TIMEOUT", "ten", '"ten" is not a duration'),
            ("RESONATE_API_NATS_TIMEOUT", "10", "needs a unit"),
            ("RESONATE_API_NATS_ENABLE", "yes", '"yes" is not a boolean'),
            ("RESONATE_WORKERS", "eight", '"eight" is not an integer'),
            ("RESONATE_WORKERS", "1.0", '"1.0" is not an integer'),
            ("RESONATE_API_NATS_ADDR", "http://x", "is not a NATS URL"),
            ("RESONATE_LOG_LEVEL", "verbose", "is not one of"),
        ],
    )
    def test_bad_env_names_variable(self, name, text, rule):
        """A bad environment value names the variable and the rule."""
        message = config_error(env={name: text})
        assert message.startswith(f"{name}: ")
        assert rule in message

    @pytest.mark.parametrize(
        ("field", "value", "flag", "rule"),
        [
            ("nats_timeout_ms", "ten", "--api-nats-timeout", '"ten" is not a duration'),
            ("nats_enabled", "maybe", "--api-nats-enable", "is not a boolean"),
            ("max_pending", "0", "--max-pending", "must be an integer >= 1"),
            ("embedded_nats", "sometimes", "--embedded-nats", "is not one of"),
            ("workers", 2.5, "--workers", "2.5 is not an integer"),
            ("nats_enabled", 1, "--api-nats-enable", "1 is not a boolean"),
        ],
    )
    def test_bad_flag_names_flag(self, field, value, flag, rule):
        """A bad flag value names the flag and the rule."""
        message = config_error(overrides={field: value})
        assert message.startswith(f"{flag}: ")
        assert rule in message

    def test_unknown_override(self):
        """An override for a field Config does not have is an error naming it."""
        assert "unknown setting 'wrokers'" in config_error(overrides={"wrokers": "2"})


class TestConfig:
    def test_is_frozen(self):
        """A Config cannot be changed after it is built."""
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            Config().workers = 2

    @pytest.mark.parametrize(
        ("field", "value"),
        [("workers", 0), ("workers", "8"), ("nats_timeout_ms", -1), ("log_level", "warn"),
         ("store_path", ""), ("nats_enabled", "false"), ("nats_subject", "a.>")],
    )
    def test_checks_fields(self, field, value):
        """A Config built in Python is held to the same rules, in canonical form, naming the field."""
        with pytest.raises(ConfigError, match=f"^{field}: "):
            Config(**{field: value})


class TestFindConfigFile:
    def test_explicit_file_must_exist(self, tmp_path):
        """--config naming a missing file is an error naming --config."""
        with pytest.raises(ConfigError, match="^--config: "):
            find_config_file(str(tmp_path / "missing.yaml"), tmp_path)

    def test_default_file_when_present(self, tmp_path):
        """Without --config, resonate.yaml in the working directory is used if it exists."""
        (tmp_path / "resonate.yaml").write_text("", encoding="utf-8")
        assert find_config_file(None, tmp_path) == tmp_path / "resonate.yaml"

    def test_no_default_file(self, tmp_path):
        """Without --config and without resonate.yaml there is no file."""
        assert find_config_file(None, tmp_path) is None

    def test_explicit_beats_default(self, tmp_path):
        """--config wins over a resonate.yaml in the working directory."""
        (tmp_path / "resonate.yaml").write_text("", encoding="utf-8")
        (tmp_path / "other.yaml").write_text("", encoding="utf-8")
        assert find_config_file(str(tmp_path / "other.yaml"), tmp_path) == tmp_path / "other.yaml"


class TestJetStreamSettings:
    """The JetStream store's settings: names a stream can take, bounds, and the derived name."""

    @pytest.mark.parametrize("bad", ["a.b", "has space", "star*", "gt>", "x" * 201, "slash/"])
    def test_a_stream_name_that_jetstream_refuses_is_refused_here(self, bad):
        with pytest.raises(ConfigError, match="store_jetstream_stream: .* is not a JetStream stream name"):
            Config(store_jetstream_stream=bad)

    @pytest.mark.parametrize("replicas", [0, 6])
    def test_replicas_outside_one_to_five_are_refused(self, replicas):
        with pytest.raises(ConfigError, match="store_jetstream_replicas"):
            Config(store_jetstream_replicas=replicas)

    def test_a_lease_under_a_second_is_refused(self):
        with pytest.raises(ConfigError, match="store_jetstream_lease_ms: 999ms is too short"):
            Config(store_jetstream_lease_ms=999)

    def test_the_stream_name_is_derived_from_the_subject_unless_given(self):
        assert jetstream_stream_name(Config(nats_subject="resonate.server")) == "RESONATE_resonate_server"
        assert jetstream_stream_name(Config(nats_subject="a.b-c", store_jetstream_stream="MINE")) == "MINE"
