"""The command line: the seed's flags, Go-style booleans, exit codes, and the Config handed to Server."""

import inspect
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import attrs
import pytest
import typer
from typer.testing import CliRunner

import resonate_sync
from resonate_sync.cli import LOG_FORMAT, app, configure_logging, normalise_go_flags
from resonate_sync.config import DEFAULT_SERVE_METRICS_ADDR, DEFAULT_SERVE_STORE_PATH, SETTINGS, Config, read_config_file

REPO = Path(resonate_sync.__file__).resolve().parents[1]
SOURCE = Path(__file__).resolve().parents[2]
SEED_FLAGS = ("--api-nats-enable", "--api-nats-addr", "--api-nats-subject", "--api-nats-timeout")
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
# click 8.1 (the last for Python 3.9) mixes stderr into stdout unless told not to; 8.2 dropped the option.
_RUNNER = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}


class ServerRecorder:
    """Stands in for resonate_sync.server.Server: records what the CLI built, runs nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[Config, str]] = []
        self.exit_code = 0

    def __call__(self, config: Config, *, mode: str) -> "ServerRecorder":
        self.calls.append((config, mode))
        return self

    def run(self) -> int:
        return self.exit_code

    @property
    def config(self) -> Config:
        [(config, _mode)] = self.calls
        return config


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No RESONATE_… variables from the developer's shell and no stray resonate.yaml."""
    for name in list(os.environ):
        if name.startswith("RESONATE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def server(monkeypatch) -> ServerRecorder:
    """Replace the server module the CLI imports with one whose Server is a recorder."""
    recorder = ServerRecorder()
    module = types.ModuleType("resonate_sync.server")
    module.Server = recorder
    monkeypatch.setitem(sys.modules, "resonate_sync.server", module)
    return recorder


@pytest.fixture(autouse=True)
def restore_root_logger():
    """configure_logging changes the root logger; put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def invoke(*args: str, env=None):
    return CliRunner(**_RUNNER).invoke(app, list(args), env=env)


class TestNormaliseGoFlags:
    def test_bare_flags_get_their_value(self):
        """A bare --api-nats-enable means true and a bare --embedded-nats means always."""
        assert normalise_go_flags(["--api-nats-enable", "--embedded-nats", "--workers", "2"]) == [
            "--api-nats-enable=true", "--embedded-nats=always", "--workers", "2",
        ]

    def test_attached_values_pass_through(self):
        """--flag=value is left for the option parser."""
        args = ["--api-nats-enable=false", "--embedded-nats=never"]
        assert normalise_go_flags(args) == args

    @pytest.mark.parametrize("args", [["--api-nats-enable", "false"], ["--embedded-nats", "auto"]])
    def test_separate_value_is_refused(self, args):
        """A value in the next word is refused with the = spelling to use, as pflag would not read it."""
        with pytest.raises(ValueError, match=f"write {args[0]}={args[1]}"):
            normalise_go_flags(args)

    def test_stops_at_double_dash(self):
        """Nothing after -- is rewritten."""
        assert normalise_go_flags(["--", "--api-nats-enable"]) == ["--", "--api-nats-enable"]


class TestHelp:
    def test_root_lists_commands(self):
        """resonate --help lists serve, dev and version."""
        result = invoke("--help", env=WIDE)
        assert result.exit_code == 0
        for command in ("serve", "dev", "version"):
            assert command in result.stdout

    @pytest.mark.parametrize("command", ["serve", "dev"])
    def test_lists_seed_flags_and_every_setting(self, command):
        """serve --help and dev --help list the seed's flags and one flag per configuration key."""
        result = invoke(command, "--help", env=WIDE)
        assert result.exit_code == 0
        for flag in (*SEED_FLAGS, "--config", *(s.flag for s in SETTINGS)):
            assert flag in result.stdout
        for setting in SETTINGS:
            assert setting.env in result.stdout

    @pytest.mark.parametrize(
        ("command", "default"), [("serve", DEFAULT_SERVE_STORE_PATH), ("dev", "in memory")]
    )
    def test_states_mode_defaults(self, command, default):
        """Each command's help states its own store default and that request timeouts are absolute ms."""
        result = invoke(command, "--help", env=WIDE)
        assert f"Default: {default}" in result.stdout
        assert "absolute times in milliseconds" in result.stdout


def command_paths(command, path=()):
    """Every command of the app, as the words that run it."""
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*path, name))


def flat(text: str) -> str:
    """Help text without the panels' borders and line breaks."""
    return " ".join(text.replace("│", " ").split())


class TestHelpRendering:
    @pytest.mark.parametrize("path", list(command_paths(typer.main.get_command(app))), ids=" ".join)
    def test_no_artefacts(self, path):
        """No help shows a type beside a flag (<bool>) or doubled brackets ([[PATTERN]])."""
        result = invoke(*path, "--help", env=WIDE)
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.stdout and "[[" not in result.stdout and "<int" not in result.stdout

    def test_store_path_is_a_directory(self):
        """--store-path is described as the directory it is."""
        text = flat(invoke("serve", "--help", env=WIDE).stdout)
        assert "--store-path PATH Directory that makes state durable" in text and "Journal file" not in text

    def test_href_base_says_what_it_is_for(self):
        """--href-base says what the links are and that nothing serves them unless a gateway does."""
        text = flat(invoke("serve", "--help", env=WIDE).stdout)
        assert "for workers that follow links. This server serves no HTTP" in text

    def test_points_at_config_defaults(self):
        """serve --help names the command that prints the documented file."""
        assert "'resonate config defaults' prints every key" in flat(invoke("serve", "--help", env=WIDE).stdout)


class TestConfigCommands:
    def test_defaults_prints_the_documented_file(self):
        """resonate config defaults prints conf/resonate.yaml exactly, which loads to the defaults."""
        result = invoke("config", "defaults")
        assert result.exit_code == 0
        assert result.stdout == (SOURCE / "conf" / "resonate.yaml").read_text(encoding="utf-8")

    def test_packaged_file_is_conf_resonate_yaml(self):
        """The installed package holds conf/resonate.yaml (in the source, a link to it, so they cannot drift)."""
        packaged = Path(resonate_sync.__file__).parent / "conf" / "resonate.yaml"
        assert packaged.read_bytes() == (SOURCE / "conf" / "resonate.yaml").read_bytes()

    def test_show_names_each_layer(self, tmp_path):
        """config show prints each value with the layer it came from: default, file, env or flag."""
        (tmp_path / "resonate.yaml").write_text("server:\n  workers: 5\n  maxPending: 6\n", encoding="utf-8")
        result = invoke("config", "show", "--tick", "250ms", env={"RESONATE_MAX_PENDING": "7"})
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert "# The configuration 'resonate serve' would run with in" in lines[0]
        assert '  path: "resonate-data/resonate.journal"  # default' in lines
        assert f"  workers: 5  # {tmp_path / 'resonate.yaml'}" in lines
        assert "  maxPending: 7  # env RESONATE_MAX_PENDING" in lines
        assert "  tick: 250ms  # flag --tick" in lines

    def test_show_dev_is_a_config_file_of_the_same_values(self, tmp_path):
        """config show --mode dev prints YAML that reads back to the Config dev would get."""
        args = ["--mode", "dev", "--workers", "3", "--api-nats-addr", "nats://h:1", "--delivery-allow", "a.>,b"]
        result = invoke("config", "show", *args)
        assert result.exit_code == 0, result.output
        (tmp_path / "shown.yaml").write_text(result.stdout, encoding="utf-8")
        expected = Config(workers=3, nats_addr="nats://h:1", delivery_allow="a.>,b")
        assert Config(**read_config_file(tmp_path / "shown.yaml")) == expected
        assert "  path: null  # default" in result.stdout.splitlines()

    def test_show_redacts_secrets(self):
        """A password or token in a URL is shown as ***."""
        result = invoke("config", "show", env={"RESONATE_API_NATS_ADDR": "nats://user:s3cret@h:4222"})
        assert result.exit_code == 0, result.output
        assert "s3cret" not in result.stdout
        assert 'addr: "nats://user:***@h:4222"  # env RESONATE_API_NATS_ADDR' in result.stdout

    def test_show_names_credential_files_only(self, tmp_path):
        """The .creds and seed settings are file paths: config show prints the paths, never the files' secrets."""
        creds, seed = tmp_path / "user.creds", tmp_path / "user.nk"
        creds.write_text("-----BEGIN NATS USER JWT-----\neyJ.secret-jwt.sig\n------END NATS USER JWT------\n")
        seed.write_text("SUSECRETSEED\n")
        result = invoke("config", "show", "--api-nats-nkey", str(seed), env={"RESONATE_API_NATS_CREDS": str(creds)})
        assert result.exit_code == 0, result.output
        assert f'creds: "{creds}"  # env RESONATE_API_NATS_CREDS' in result.stdout
        assert f'nkey: "{seed}"  # flag --api-nats-nkey' in result.stdout
        assert "secret-jwt" not in result.stdout and "SUSECRETSEED" not in result.stdout

    @pytest.mark.parametrize("args, message", [
        (["--mode", "prod"], "--mode: 'prod' is not one of: dev, serve"),
        (["--workers", "many"], '--workers: "many" is not an integer'),
    ])  # fmt: skip
    def test_show_errors_exit_2(self, args, message):
        """A bad mode or value exits 2 with the same message serve would give."""
        result = invoke("config", "show", *args)
        assert result.exit_code == 2 and message in result.stderr


class TestServeAndDev:
    @pytest.mark.parametrize("command", ["serve", "dev"])
    def test_defaults_reach_server(self, command, server):
        """With no flags, file or env, Server gets the mode's defaults and the mode."""
        result = invoke(command)
        assert result.exit_code == 0, result.output
        assert server.calls == [(Config() if command == "dev" else attrs.evolve(
            Config(), store_path=DEFAULT_SERVE_STORE_PATH, embedded_nats="never",
            metrics_addr=DEFAULT_SERVE_METRICS_ADDR), command)]

    def test_every_flag_reaches_server(self, server):
        """Each flag's value arrives, parsed, in the Config given to Server."""
        result = invoke(
            "serve", "--api-nats-enable", "--api-nats-addr", "nats://h:1", "--api-nats-subject", "a.b",
            "--api-nats-timeout", "1m30s", "--api-nats-queue", "q", "--embedded-nats=auto",
            "--store-path", "x.journal", "--fsync", "never", "--snapshot-every", "7", "--workers", "3",
            "--max-pending", "9", "--tick", "250ms", "--batch-size", "5", "--href-base", "http://h:2",
            "--task-claim-timeout", "2s", "--task-retry-timeout", "3s", "--log-level", "debug",
            "--metrics-addr", "127.0.0.1:0", "--log-format", "json",
        )
        assert result.exit_code == 0, result.output
        assert server.config == Config(
            nats_enabled=True, nats_addr="nats://h:1", nats_subject="a.b", nats_timeout_ms=90_000,
            nats_queue="q", embedded_nats="auto", store_path="x.journal", fsync="never",
            snapshot_every=7, workers=3, max_pending=9, tick_ms=250, batch_size=5,
            href_base="http://h:2", task_claim_timeout_ms=2_000, task_retry_timeout_ms=3_000,
            log_level="debug", metrics_addr="127.0.0.1:0", log_format="json",
        )

    def test_tls_flags_reach_server(self, server):
        """The TLS flags arrive in the Config; --api-nats-tls-verify alone means true, =false turns it off."""
        assert invoke(
            "serve", "--api-nats-addr", "tls://h:1", "--api-nats-tls-ca", "ca.pem", "--api-nats-tls-cert",
            "c.pem", "--api-nats-tls-key", "k.pem", "--api-nats-tls-verify=false",
        ).exit_code == 0
        config = server.config
        assert (config.nats_tls_ca, config.nats_tls_cert, config.nats_tls_key, config.nats_tls_verify) == (
            "ca.pem", "c.pem", "k.pem", False)
        assert invoke("serve", "--api-nats-tls-verify").exit_code == 0
        assert server.calls[-1][0].nats_tls_verify is True

    def test_credential_flags_reach_server(self, server):
        """--api-nats-creds and --api-nats-nkey arrive in the Config as the file paths given."""
        assert invoke("serve", "--api-nats-creds", "u.creds").exit_code == 0
        assert server.config.nats_creds == "u.creds"
        assert invoke("serve", "--api-nats-nkey", "u.nk").exit_code == 0
        assert server.calls[-1][0].nats_nkey == "u.nk"

    @pytest.mark.parametrize(("args", "expected"), [
        (["--embedded-nats"], "always"), (["--embedded-nats=never"], "never"), ([], "auto"),
    ])
    def test_embedded_nats_optional_value(self, args, expected, server):
        """--embedded-nats alone means always; =MODE picks a mode; absent keeps the mode default."""
        assert invoke("dev", *args).exit_code == 0
        assert server.config.embedded_nats == expected

    @pytest.mark.parametrize("value", ["false", "0", "f", "False"])
    def test_nats_disabled_is_nothing_to_serve(self, value, server):
        """--api-nats-enable=false exits 2 saying there is nothing to serve, without starting a Server."""
        result = invoke("serve", f"--api-nats-enable={value}")
        assert result.exit_code == 2
        assert "nothing to serve" in result.stderr
        assert server.calls == []

    def test_nats_disabled_by_env(self, server):
        """Disabling NATS through the environment is refused the same way."""
        result = invoke("dev", env={"RESONATE_API_NATS_ENABLE": "false"})
        assert result.exit_code == 2
        assert "nothing to serve" in result.stderr

    def test_flag_reenables_what_env_disabled(self, server):
        """A bare --api-nats-enable overrides RESONATE_API_NATS_ENABLE=false."""
        result = invoke("dev", "--api-nats-enable", env={"RESONATE_API_NATS_ENABLE": "false"})
        assert result.exit_code == 0, result.output
        assert server.config.nats_enabled is True

    def test_separate_bool_value_is_a_usage_error(self, server):
        """--api-nats-enable false (no =) exits 2 with the spelling to use, and starts nothing."""
        result = invoke("serve", "--api-nats-enable", "false", env=WIDE)
        assert result.exit_code == 2
        assert "--api-nats-enable=false" in result.stderr
        assert server.calls == []

    def test_bad_duration_flag(self, server):
        """A bad duration flag exits 2 naming the flag and the rule, without a traceback."""
        result = invoke("dev", "--api-nats-timeout", "ten")
        assert result.exit_code == 2
        assert '--api-nats-timeout: "ten" is not a duration' in result.stderr
        assert "Traceback" not in result.stderr
        assert server.calls == []

    @pytest.mark.parametrize(("command", "text", "message"), [
        ("serve", "api:\n  subsystems:\n    nats:\n      timeout: ten\n",
         'api.subsystems.nats.timeout: "ten" is not a duration'),
        ("dev", "server:\n  wrokers: 2\n", "unknown key server.wrokers"),
    ])
    def test_bad_config_file_names_key(self, command, text, message, server, tmp_path):
        """A bad value or unknown key in the config file exits 2 naming the file and the key."""
        path = tmp_path / "bad.yaml"
        path.write_text(text, encoding="utf-8")
        result = invoke(command, "--config", str(path))
        assert result.exit_code == 2
        assert f"{path}: {message}" in result.stderr
        assert server.calls == []

    def test_missing_config_file(self, server):
        """--config naming a missing file exits 2 naming --config."""
        result = invoke("dev", "--config", "missing.yaml")
        assert result.exit_code == 2
        assert '--config: "missing.yaml" is not a file' in result.stderr

    def test_bad_env_names_variable(self, server):
        """A bad environment value exits 2 naming the variable."""
        result = invoke("dev", env={"RESONATE_WORKERS": "many"})
        assert result.exit_code == 2
        assert 'RESONATE_WORKERS: "many" is not an integer' in result.stderr

    def test_working_directory_resonate_yaml(self, server, tmp_path):
        """Without --config, resonate.yaml in the working directory is read."""
        (tmp_path / "resonate.yaml").write_text("server:\n  workers: 5\n", encoding="utf-8")
        assert invoke("dev").exit_code == 0
        assert server.config.workers == 5

    def test_layers_through_the_cli(self, server, tmp_path):
        """File < env < flag holds end to end: each key comes from the highest layer setting it."""
        (tmp_path / "resonate.yaml").write_text(
            "server:\n  workers: 5\n  maxPending: 6\n  batchSize: 7\n", encoding="utf-8"
        )
        result = invoke("dev", "--workers", "2", env={"RESONATE_WORKERS": "3", "RESONATE_MAX_PENDING": "4"})
        assert result.exit_code == 0, result.output
        assert (server.config.workers, server.config.max_pending, server.config.batch_size) == (2, 4, 7)

    def test_server_exit_code_is_returned(self, server):
        """The process exits with the code Server.run returns."""
        server.exit_code = 3
        assert invoke("dev").exit_code == 3

    def test_log_level_configures_root_logger(self, server):
        """--log-level sets the root logger's level before the server runs."""
        assert invoke("dev", "--log-level", "warn").exit_code == 0
        assert logging.getLogger().level == logging.WARNING


class TestVersion:
    @pytest.mark.parametrize("args", [["version"], ["--version"]])
    def test_prints_version(self, args):
        """resonate version and resonate --version print resonate_sync.__version__."""
        result = invoke(*args)
        assert result.exit_code == 0
        assert result.stdout.strip() == resonate_sync.__version__


class TestRootOptions:
    @pytest.mark.parametrize("command", ["serve", "dev", "version"])
    def test_client_options_before_another_command_are_refused(self, command, server):
        """--addr or --json before serve, dev or version exits 2 naming them, instead of being ignored."""
        result = invoke("--addr", "nats://h:1", "--json", command)
        assert result.exit_code == 2
        assert f"--addr, --json before '{command}': only the client commands" in result.stderr
        assert server.calls == []

    def test_request_timeout_from_the_environment(self):
        """RESONATE_REQUEST_TIMEOUT sets --request-timeout; a bad one exits 2 naming the variable."""
        result = invoke("promises", "get", "p", env={"RESONATE_REQUEST_TIMEOUT": "5"})
        assert result.exit_code == 2
        assert "RESONATE_REQUEST_TIMEOUT" in result.stderr and "needs a unit" in result.stderr

    def test_root_options_are_listed(self):
        """resonate --help shows --version, the completion options and the connection options."""
        text = invoke("--help", env=WIDE).stdout
        for flag in ("--version", "--install-completion", "--show-completion", "--addr", "--subject",
                     "--request-timeout", "--json"):
            assert flag in text


class TestDeadlineOptions:
    @pytest.mark.parametrize("text, understood", [
        ("60000", "1970-01-01T00:01:00.000Z"), ("1767225600", "2026-01-01T00:00:00.000Z"),
    ])  # fmt: skip
    def test_a_small_number_is_a_usage_error_saying_what_it_would_mean(self, text, understood):
        """promises create --timeout <number before 2000> exits 2 before connecting, naming what it would mean."""
        result = invoke("promises", "create", "p", "--timeout", text, "--addr", "nats://127.0.0.1:1", env=WIDE)
        assert result.exit_code == 2
        message = " ".join(result.stderr.replace("│", " ").split())
        assert "--timeout" in message and understood in message and "surely a duration" in message


class TestConfigureLogging:
    def test_one_handler_with_time_level_and_name(self):
        """Configuring twice leaves one handler of ours, formatting time, level, logger and message."""
        root = logging.getLogger()
        before = len(root.handlers)
        configure_logging("debug")
        configure_logging("info")
        assert len(root.handlers) == before + 1
        assert root.handlers[-1].formatter._fmt == LOG_FORMAT
        assert root.level == logging.INFO

    def test_writes_to_current_stderr(self, capsys):
        """Records go to whatever sys.stderr is when they are logged."""
        configure_logging("info")
        logging.getLogger("resonate_sync.test").info("hello %s", "there")
        line = capsys.readouterr().err
        assert "INFO resonate_sync.test: hello there" in line


class TestModuleEntryPoint:
    def run(self, *args: str, cwd: Path, env=None) -> subprocess.CompletedProcess:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RESONATE_")}, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return subprocess.run(
            [sys.executable, "-m", "resonate_sync", *args],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
        )

    def test_help(self, tmp_path):
        """python -m resonate_sync --help works and is the resonate program."""
        result = self.run("--help", cwd=tmp_path)
        assert result.returncode == 0
        assert "resonate" in result.stdout and "serve" in result.stdout

    def test_shell_completion(self, tmp_path):
        """The completion protocol answers: 'resonate promises r<TAB>' offers read, reject and resolve."""
        result = self.run(env={"_RESONATE_COMPLETE": "complete_bash", "COMP_WORDS": "resonate promises r",
                               "COMP_CWORD": "2"}, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert sorted(result.stdout.split()) == ["read", "reject", "resolve"]

    def test_disabled_nats_exits_2(self, tmp_path):
        """python -m resonate_sync serve --api-nats-enable=false exits 2 with a message and no traceback."""
        result = self.run("serve", "--api-nats-enable=false", cwd=tmp_path)
        assert result.returncode == 2
        assert "nothing to serve" in result.stderr
        assert "Traceback" not in result.stderr
