"""Flags, environment variables, config files, and start-up errors."""

import ctypes
import os
import socket
import sys
import tempfile
from contextlib import contextmanager

import pytest
from websockets.sync.client import connect

from greenbridge import __version__
from greenbridge.cli import build_parser, load_config, parse_config
from support import (ECHO_PHP, LIBRARY_ECHO_PHP, REPO, REQUIRED, config_refusal,
                     readme_option_table, readme_snippet, run_cli)

# Every option of the Rust bridge: flag, short flag, environment variable, default.
RUST_BRIDGE_OPTIONS = [
    ("--ws-host", "-H", "WSS_CONFIG_WS_HOST", "0.0.0.0"),
    ("--ws-port", "-P", "WSS_CONFIG_WS_PORT", 8080),
    ("--tcp-bind", "-B", "WSS_CONFIG_TCP_BIND", "127.0.0.1"),
    ("--tcp-port", None, "WSS_CONFIG_TCP_PORT", 0),
    ("--php-executable", "-e", "WSS_CONFIG_PHP_EXECUTABLE", None),
    ("--script", "-s", "WSS_CONFIG_SCRIPT", None),
    ("--php-arg", "-a", "WSS_CONFIG_PHP_ARGS", None),
    ("--max-connections", "-M", "WSS_CONFIG_MAX_CONNECTIONS", 256),
    ("--max-processes", "-m", "WSS_CONFIG_MAX_PROCESSES", 64),
    ("--connection-timeout", "-T", "WSS_CONFIG_CONNECTION_TIMEOUT", 0),
    ("--php-timeout", "-t", "WSS_CONFIG_PHP_TIMEOUT", 0),
    ("--buffer-size", "-b", "WSS_CONFIG_BUFFER_SIZE", 65536),
    ("--log-level", "-l", "WSS_CONFIG_LOG_LEVEL", "info"),
    ("--php-connect-timeout", None, "WSS_CONFIG_PHP_CONNECT_TIMEOUT", 30),
    ("--php-connect-retries", None, "WSS_CONFIG_PHP_CONNECT_RETRIES", 3),
    ("--max-payload-size", None, "WSS_CONFIG_MAX_PAYLOAD_SIZE", 16777216),
    ("--write-buffer-size", None, "WSS_CONFIG_WRITE_BUFFER_SIZE", 131072),
    ("--max-write-buffer-size", None, "WSS_CONFIG_MAX_WRITE_BUFFER", 16777216),
    ("--shutdown-timeout", None, "WSS_CONFIG_SHUTDOWN_TIMEOUT", 30),
    ("--php-kill-grace", None, "WSS_CONFIG_PHP_KILL_GRACE", 1),
]


def test_defaults_match_the_rust_bridge():
    config = parse_config(REQUIRED, environment={})
    for flag, _short, _env, default in RUST_BRIDGE_OPTIONS:
        if default is not None:
            assert getattr(config, flag[2:].replace("-", "_")) == default, flag
    assert config.php_args == ()


@pytest.mark.parametrize("flag,short,env_name,default", RUST_BRIDGE_OPTIONS)
def test_every_option_has_its_flag_short_flag_and_environment_variable(flag, short, env_name,
                                                                       default):
    actions = {action.dest: action for action in build_parser()._actions}
    action = actions[flag[2:].replace("-", "_")]
    assert flag in action.option_strings
    if short:
        assert short in action.option_strings
    assert action.env_var == env_name


def test_precedence_flag_over_environment_over_file_over_default(tmp_path):
    config_file = tmp_path / "bridge.conf"
    config_file.write_text("max-connections = 11\nmax-processes = 12\nbuffer-size = 13\n"
                           "php-arg = [one, two]\n")
    environment = {"WSS_CONFIG_MAX_PROCESSES": "22", "WSS_CONFIG_BUFFER_SIZE": "23"}
    config = parse_config(["-c", str(config_file), "-b", "33", *REQUIRED], environment)
    assert config.max_connections == 11   # file
    assert config.max_processes == 22     # environment beats file
    assert config.buffer_size == 33       # flag beats both
    assert config.php_args == ("one", "two")
    assert config.shutdown_timeout == 30  # default


def test_everything_from_environment():
    environment = {"WSS_CONFIG_PHP_EXECUTABLE": "php", "WSS_CONFIG_SCRIPT": ECHO_PHP,
                   "WSS_CONFIG_PHP_ARGS": "[--flag, value]", "WSS_CONFIG_LOG_LEVEL": "warn",
                   "WSS_CONFIG_PHP_KILL_GRACE": "2.5"}
    config = parse_config([], environment)
    assert config.php_executable.endswith("/php")
    assert config.php_args == ("--flag", "value")
    assert config.log_level == "warn"
    assert config.php_kill_grace == 2.5


def test_max_write_buffer_size_left_unset_follows_a_larger_max_payload_size():
    """Unset, the write buffer never refuses a message --max-payload-size allows; set, it caps."""
    big = ["--max-payload-size", str(64 * 1024 * 1024)]
    assert parse_config([*REQUIRED, *big], {}).max_write_buffer_size == 64 * 1024 * 1024
    assert parse_config([*REQUIRED, *big], {"WSS_CONFIG_MAX_WRITE_BUFFER": "1048576"}) \
        .max_write_buffer_size == 1048576
    small = ["--max-payload-size", "1024"]
    assert parse_config([*REQUIRED, *small], {}).max_write_buffer_size == 16 * 1024 * 1024


def test_php_args_reach_the_script(start_bridge, tmp_path):
    script = tmp_path / "args.php"
    script.write_text("<?php $s = stream_socket_client('tcp://'.getenv('WSS_TCP_HOST').':'"
                      ".getenv('WSS_TCP_PORT')); fwrite($s, getenv('WSS_CONNECTION_ID')"
                      ".\"\\n\".json_encode(array_slice($argv, 1))); fread($s, 1);")
    bridge = start_bridge("-a", "first", "--php-arg", "second arg", script=str(script))
    with connect(bridge.url()) as ws:
        assert ws.recv(timeout=10) == b'["first","second arg"]'


BAD_VALUES = [
    (["-l", "loud"], "argument -l/--log-level: invalid log level"),
    (["-P", "http"], "argument -P/--ws-port: invalid port"),
    (["-P", "70000"], "argument -P/--ws-port: invalid port"),
    (["-M", "0"], "argument -M/--max-connections: invalid positive integer"),
    (["-T", "-1"], "argument -T/--connection-timeout: invalid number of seconds"),
    (["-s", "/nonexistent/handler.php"], "--script: '/nonexistent/handler.php' is not a file"),
    (["-e", "php-does-not-exist"], "--php-executable: 'php-does-not-exist' is not on PATH"),
    (["-b", "100", "--max-write-buffer-size", "50"], "--buffer-size (100) must not exceed"),
    (["--max-payload-size", str(2 ** 32)],
     "argument --max-payload-size: 4294967296 is over the maximum, 4294967295"),
    (["--php-env", "everything"],
     "argument --php-env: invalid choice (inherit, minimal) value: 'everything'"),
    (["--message-timeout", "-1"], "argument --message-timeout: invalid number of seconds value: '-1'"),
    (["--broker-timeout", "0"],
     "argument --broker-timeout: invalid positive number of seconds value: '0'"),
    (["--node-ttl", "0"], "argument --node-ttl: invalid positive integer value: '0'"),
    (["--node-ttl", "31536001"], "argument --node-ttl: 31536001 is over the maximum, 31536000"),
    (["--history-size", "-1"],
     "argument --history-size: invalid non-negative integer value: '-1'"),
    (["--history-ttl", "0"],
     "argument --history-ttl: invalid positive number of seconds value: '0'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
]


@pytest.mark.parametrize("args,message", BAD_VALUES)
def test_bad_values_are_refused_saying_which_and_why(args, message):
    # Later flags win, so the bad value overrides the good one in REQUIRED.
    assert message in config_refusal([*REQUIRED, *args])


# How a refusal reaches the user: one of each source (a value's type, the maximum of a
# number, a check after parsing), through the command as it runs.
@pytest.mark.parametrize("args,message", [BAD_VALUES[1], BAD_VALUES[5], BAD_VALUES[8]])
def test_bad_values_stop_start_up_with_one_line_and_status_2(args, message):
    result = run_cli(*REQUIRED, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == "greenbridge: error: " + config_refusal([*REQUIRED, *args])
    assert message in lines[0]
    assert "Traceback" not in result.stderr


# Every number option with its largest value (what the README states).
YEAR = 365 * 24 * 3600
MAXIMA = [
    ("--buffer-size", 16 * 2 ** 20),
    ("--write-buffer-size", 2 ** 30),
    ("--max-write-buffer-size", 2 ** 30),
    ("--max-payload-size", 2 ** 32 - 1),
    ("--max-connections", 1000000),
    ("--max-processes", 1000000),
    ("--max-pending-handshakes", 1000000),
    ("--max-connections-per-ip", 1000000),
    ("--history-size", 1000000),
    ("--php-connect-retries", 1000),
    ("--workers", 1024),
    ("--connection-timeout", YEAR),
    ("--php-timeout", YEAR),
    ("--php-connect-timeout", YEAR),
    ("--shutdown-timeout", YEAR),
    ("--php-kill-grace", YEAR),
    ("--ping-interval", YEAR),
    ("--ping-timeout", YEAR),
    ("--handshake-timeout", YEAR),
    ("--message-timeout", YEAR),
    ("--tls-renewal-check-interval", YEAR),
    ("--tls-propagation-timeout", YEAR),
    ("--history-ttl", YEAR),
    ("--broker-timeout", YEAR),
]


@pytest.mark.parametrize("flag,maximum", MAXIMA)
def test_numbers_over_their_maximum_are_refused_and_the_maximum_serves(start_bridge, flag,
                                                                       maximum):
    # --buffer-size must also fit in --max-write-buffer-size: make room for it.
    others = ["--max-write-buffer-size", str(2 ** 30)] if flag == "--buffer-size" else []
    # Seconds may be written as floats; the others are integers.
    absurd = "1e300" if maximum == YEAR else "99999999999999999999"
    for value in (str(maximum + 1), absurd):
        message = config_refusal([*REQUIRED, *others, flag, value])
        assert flag in message and "maximum" in message and str(maximum) in message, message
    load_config([*REQUIRED, *others, flag, str(maximum)])  # accepted
    if flag != "--workers":
        start_bridge(*others, flag, str(maximum)).assert_serves()
        return
    # 1024 server processes: too many for a test machine. Bound to a port in use, start-up
    # gets as far as its first bind, then ends with "--ws-port N: address already in use".
    with taken_port() as port:
        accepted = run_cli(*REQUIRED, "-H", "127.0.0.1", "-P", str(port), flag, str(maximum))
    assert_one_line_status_2(accepted, "--ws-port %d: address already in use" % port)


def test_readme_line_for_missing_php_is_what_start_up_prints(tmp_path):
    # PATH holds only an empty folder: a machine without PHP installed.
    result = run_cli("-e", "php", "-s", ECHO_PHP, env={"PATH": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr == readme_snippet("missing-php") + "\n"


def start_up_mistakes(tmp_path):
    """A newcomer's mistakes with the PHP binary and the script: (args, the one line)."""
    not_executable = tmp_path / "php"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    missing = tmp_path / "bin" / "php"
    return [
        (["-e", str(not_executable)], "--php-executable: '%s' is not executable (chmod +x it, "
                                      "or give the PHP binary's path)" % not_executable),
        (["-e", str(missing)], "--php-executable: '%s' does not exist; give the PHP binary's "
                               "path (command -v php prints it)" % missing),
        (["-s", "handler-typo.php"], "--script: 'handler-typo.php' is not a file (relative "
                                     "paths start at %s, the directory greenbridge started "
                                     "in)" % REPO),
    ]


def test_php_binary_and_script_mistakes_stop_start_up_saying_what_to_do(tmp_path, monkeypatch):
    # What the command prints of a refusal: test_bad_values_stop_start_up_with_one_line_...
    monkeypatch.chdir(REPO)  # where the command starts, as run_cli runs it
    for args, line in start_up_mistakes(tmp_path):
        assert config_refusal([*REQUIRED, *args]) == line


def parse_config_as(user, args):
    """parse_config(args) in a forked child running as `user` (uid and gid), without exec:
    the interpreter may live where that user cannot go (/root). Returns its exit status and
    what it wrote to stderr."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only what start-up does, then out
        status = 1
        sys.stderr = os.fdopen(write_end, "w")  # where argparse writes its error
        try:
            os.setgroups([])
            os.setresgid(user, user, user)
            os.setresuid(user, user, user)
            parse_config(args, environment={})
            status = 0
        except SystemExit as exit_:
            status = exit_.code
        finally:
            sys.stderr.flush()
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as child_stderr:
        written = child_stderr.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), written


def test_unreadable_script_stops_start_up_saying_what_to_do():
    # root reads every file: the check runs as nobody (65534), who cannot read this one.
    user = 65534 if os.geteuid() == 0 else os.getuid()
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)  # the folder open to that user, the script not
        script = os.path.join(folder, "handler.php")
        with open(script, "w") as handler:
            handler.write("<?php\n")
        os.chmod(script, 0)
        status, stderr = parse_config_as(user, ["-e", "php", "-s", script])
    assert status == 2
    assert stderr == ("greenbridge: error: --script: '%s' is not readable by this user "
                      "(uid %d); make it readable (chmod a+r) or run greenbridge as a user "
                      "who can read it\n" % (script, user))


def test_missing_required_options_are_named():
    for args, option in [((), "--php-executable"), (("-e", "php"), "--script")]:
        result = run_cli(*args)
        assert result.returncode == 2
        assert option in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_bad_config_file_key_is_one_line(tmp_path):
    config_file = tmp_path / "bad.conf"
    config_file.write_text("ws-prot = 1\n")
    result = run_cli("-c", str(config_file), *REQUIRED)
    assert result.returncode == 2
    assert "ws-prot" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@contextmanager
def taken_port(free_below=False):
    """The port of a socket listening on 127.0.0.1 for the block (another program's, as
    far as greenbridge can tell); with `free_below`, one whose port - 1 is free."""
    for _attempt in range(50):
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen(1)
            port = squatter.getsockname()[1]
            if free_below and not port_is_free(port - 1):
                continue
            yield port
            return
    raise AssertionError("no listening port with a free port below it")


def port_is_free(port):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def assert_one_line_status_2(result, expected):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


@pytest.mark.parametrize("flags,named", [
    (["-P", "{port}"], "--ws-port {port}"),
    (["-P", "0", "--admin-port", "{port}"], "--admin-port {port}"),
    (["-P", "0", "--tcp-port", "{port}"], "--tcp-port {port}"),
    # With workers the arbiter binds every socket before it forks any worker.
    (["-P", "{port}", "--workers", "2"], "--ws-port {port}"),
    (["-P", "0", "--tcp-port", "{below}", "--workers", "2"],
     "--tcp-port {below} (worker 2 listens on {port})"),
], ids=["ws-port", "admin-port", "tcp-port", "ws-port with workers", "tcp-port of worker 2"])
def test_a_port_in_use_is_one_line_naming_the_option_and_status_2(flags, named):
    # The line README.rst prints for --ws-port 8080 on 127.0.0.1, after the option.
    _, in_use = readme_snippet("port-in-use").split(" --ws-port 8080", 1)
    with taken_port(free_below=True) as port:
        values = {"port": port, "below": port - 1}
        result = run_cli(*REQUIRED, "-H", "127.0.0.1",
                         *(flag.format(**values) for flag in flags))
    assert_one_line_status_2(result, named.format(**values) + in_use)


_PR_CAPBSET_DROP = 24  # linux/prctl.h
_CAP_NET_BIND_SERVICE = 10  # linux/capability.h


def _without_the_right_to_low_ports():
    """In the child before exec: root without CAP_NET_BIND_SERVICE, as an ordinary user."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_CAPBSET_DROP, _CAP_NET_BIND_SERVICE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_port_below_1024_without_the_right_to_it_is_one_line():
    # As root, the test drops the right (the capability) for greenbridge's process.
    unprivileged = {"preexec_fn": _without_the_right_to_low_ports} if os.getuid() == 0 else {}
    result = run_cli(*REQUIRED, "-H", "127.0.0.1", "-P", "1023", **unprivileged)
    assert_one_line_status_2(result, "--ws-port 1023: permission denied on 127.0.0.1 (ports "
                                     "below 1024 need root or CAP_NET_BIND_SERVICE")


@pytest.mark.parametrize("flags,expected", [
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of this machine.
    (["-H", "192.0.2.1"], "--ws-host 192.0.2.1: not an address of this machine"),
    (["-H", "127.0.0.1", "-P", "0", "--admin-host", "192.0.2.1", "--admin-port", "0"],
     "--admin-host 192.0.2.1: not an address of this machine"),
    # A DNS label has 63 bytes at most: the resolver refuses it without asking a server.
    (["-H", "x" * 64 + ".invalid"], "--ws-host %s.invalid: no such host" % ("x" * 64)),
], ids=["ws-host", "admin-host", "unresolvable ws-host"])
def test_an_address_not_of_this_machine_is_one_line(flags, expected):
    assert_one_line_status_2(run_cli(*REQUIRED, *flags), expected)


def test_help_lists_every_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag, short, env_name, _default in RUST_BRIDGE_OPTIONS:
        assert flag in result.stdout
        assert env_name in result.stdout
    assert "-c CONFIG_FILE, --config CONFIG_FILE" in result.stdout


def test_version():
    for flag in ("-V", "--version"):
        result = run_cli(flag)
        assert result.returncode == 0
        assert result.stdout.strip() == "greenbridge " + __version__


def test_first_run_answers_text_with_text_and_binary_with_binary(start_readme_bridge):
    """The README's first command (conf/bridge.conf serving conf/echo.php): what a client
    sends comes back with its type, as the dev console, wscat or a browser shows it."""
    bridge = start_readme_bridge("first-run")
    with connect(bridge.url()) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo"
        ws.send(b"\x00\xff bytes")
        assert ws.recv(timeout=10) == b"\x00\xff bytes"
    assert bridge.stop() == 0


def test_readme_handler_is_the_shipped_echo_and_runs_from_anywhere(start_bridge, tmp_path):
    """The handler the README shows is conf/echo.php's code, and that code finds the PHP
    library from any directory (greenbridge tells it where: WSS_PHP_LIB)."""
    def code(text):
        lines = (line.split("//")[0].strip() for line in text.splitlines())
        return [line for line in lines if line]

    readme_handler = readme_snippet("echo-handler")
    assert code(readme_handler) == code(open(LIBRARY_ECHO_PHP).read())
    (tmp_path / "echo.php").write_text(readme_handler)
    bridge = start_bridge("--message-mode", "framed", script=str(tmp_path / "echo.php"),
                          cwd=str(tmp_path))
    with connect(bridge.url()) as ws:
        ws.send("from anywhere")
        assert ws.recv(timeout=10) == "from anywhere"


def test_raw_example_and_readme_raw_handler_echo_bytes(start_readme_bridge, start_bridge,
                                                       tmp_path):
    """conf/raw.conf (the README's command) serves the plain-socket echo: raw mode, so a
    text message comes back binary; the shorter handler the README shows does the same."""
    (tmp_path / "raw.php").write_text(readme_snippet("raw-handler"))
    for bridge in (start_readme_bridge("raw-run"),
                   start_bridge(script=str(tmp_path / "raw.php"))):
        with connect(bridge.url()) as ws:
            ws.send("raw")
            assert ws.recv(timeout=10) == b"raw"


def test_readme_configuration_table_is_well_formed_and_true():
    """README.rst parses without warnings, and each row of its option tables names the
    flag's real environment variable."""
    rows = readme_option_table()
    env_vars = {flag: action.env_var for action in build_parser()._actions
                for flag in action.option_strings}
    for flag, _short, env_name, _default in RUST_BRIDGE_OPTIONS:
        assert rows[flag] == env_name, flag
    for flag, env_name in rows.items():
        assert (env_vars[flag] or "") == env_name, flag
