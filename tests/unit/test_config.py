"""The one configuration schema: every option reaches every source (keyword, ini key, environment,
CLI flag) with the same default and the same parsing, and a bad one is refused naming it.

Fast: no process, no socket; the schema is iterated, so a new option is covered (or fails here
until it has a sample value below).
"""
import re

import pytest
from gunicorn.errors import AppImportError

from ouistiti_gw import WebSocketGateway
from ouistiti_gw.cli import build_parser, given
from ouistiti_gw.config import (
    COMMAND_LINE,
    ENVIRONMENT,
    INI,
    KEYWORD,
    ConfigurationError,
    GatewayConfig,
    Patterns,
    ServerConfig,
    cli_flag,
    options,
)
from ouistiti_gw.errors import GatewayError
from ouistiti_gw.servers.handler import GatewayHandler
from ouistiti_gw.servers.inifile import IniFile
from ouistiti_gw.servers.paste import make_app, make_filter, not_found_app
from ouistiti_gw.servers.wsgi_server import handler_class, make_server

#: For each option, a string no default equals, and the value it parses to.
SAMPLES = {
    "docroot": ("/run/ws", "/run/ws"),
    "allow": ("ws_*, chat", ("ws_*", "chat")),
    "deny": ("internal/*", ("internal/*",)),
    "mode": ("direct", "direct"),
    "origins": ("https://a.example, https://*.example.org", ("https://a.example", "https://*.example.org")),
    "allowed_hosts": ("gw.example", ("gw.example",)),
    "auth_request": ("/auth/check", "/auth/check"),
    "authorize": ("wrapped_app:authorize", "wrapped_app:authorize"),
    "auth_recheck": ("30", 30.0),
    "auth_recheck_failure": ("close", "close"),
    "max_connections": ("5", 5),
    "max_message_size": ("4096", 4096),
    "max_message_rate": ("2.5", 2.5),
    "max_frame_rate": ("50", 50.0),
    "max_byte_rate": ("1048576", 1048576),
    "proxy_protocol": ("v2", "v2"),
    "trusted_proxies": ("10.0.0.0/8, ::1", ("10.0.0.0/8", "::1")),
    "metrics_path": ("/stats", "/stats"),
    "metrics_allow": ("192.168.0.0/16", ("192.168.0.0/16",)),
    "admin_path": ("/admin/sessions", "/admin/sessions"),
    "admin_allow": ("10.0.0.0/8, ::1", ("10.0.0.0/8", "::1")),
    "ping_interval": ("0.5", 0.5),
    "idle_timeout": ("3", 3.0),
    "compression": ("off", "off"),
    "compression_threshold": ("0", 0),
    "compression_client_context": ("on", "on"),
    "host": ("::1", "::1"),
    "port": ("9000", 9000),
    "backlog": ("300", 300),
    "certfile": ("cert.pem", "cert.pem"),
    "keyfile": ("key.pem", "key.pem"),
    "header_timeout": ("2.5", 2.5),
    "max_header_size": ("4096", 4096),
    "keepalive_timeout": ("7", 7.0),
    "drain_timeout": ("12", 12.0),
}
GATEWAY = [item for item in options(GatewayConfig) if item.name != "metrics_path"]  # needs prometheus_client
SERVER = list(options(ServerConfig))
NUMBERS = [item for item in options(GatewayConfig) + options(ServerConfig) if item.kind in (int, float)]
BASE = {"docroot": "/run/ws"}
#: What an option needs set with it.
NEEDS = {"auth_recheck": {"auth_request": "/auth/check"}}


def names(schema) -> list[str]:
    return [item.name for item in options(schema)]


def test_every_option_has_a_sample():
    assert sorted(SAMPLES) == sorted(names(GatewayConfig) + names(ServerConfig))


def test_sources_spell_an_option_their_way():
    item = next(item for item in options(GatewayConfig) if item.name == "max_connections")
    assert (item.environment_variable, item.cli_flag) == ("OUISTITI_GW_MAX_CONNECTIONS", "--max-connections")
    assert [source.spell("max_connections") for source in (KEYWORD, INI, ENVIRONMENT, COMMAND_LINE)] == [
        "max_connections", "max_connections", "OUISTITI_GW_MAX_CONNECTIONS", "--max-connections"]


@pytest.mark.parametrize("item", GATEWAY, ids=lambda item: item.name)
def test_every_gateway_option_is_a_keyword_an_ini_key_a_variable_and_a_flag(item, monkeypatch):
    text, value = SAMPLES[item.name]
    needed = NEEDS.get(item.name, {})
    settings = {**BASE, **needed, item.name: text}
    assert getattr(WebSocketGateway(not_found_app, **settings).config, item.name) == value
    assert getattr(make_app({}, **settings).config, item.name) == value
    assert getattr(make_filter({}, **settings)(not_found_app).config, item.name) == value
    for name, setting in settings.items():
        monkeypatch.setenv(f"OUISTITI_GW_{name.upper()}", setting)
    assert getattr(make_app().config, item.name) == value
    flags = [word for name, setting in needed.items() for word in (f"--{name.replace('_', '-')}", setting)]
    args = build_parser().parse_args(["serve", "--docroot", BASE["docroot"], *flags, item.cli_flag, text])
    assert getattr(given(args, GatewayConfig), item.name) == value


def test_metrics_path_is_a_keyword_an_ini_key_a_variable_and_a_flag(monkeypatch):
    """Without prometheus_client a metrics_path is refused, naming it: either way it arrived."""
    pytest.importorskip("prometheus_client")
    monkeypatch.setenv("OUISTITI_GW_DOCROOT", "/run/ws")
    monkeypatch.setenv("OUISTITI_GW_METRICS_PATH", "/stats")
    args = build_parser().parse_args(["serve", "--docroot", "/run/ws", "--metrics-path", "/stats"])
    gateway = WebSocketGateway(not_found_app, "/run/ws", metrics_path="/stats")
    assert gateway.config.metrics_path == "/stats" and gateway.metrics is not None
    assert make_app({}, docroot="/run/ws", metrics_path="/stats").config.metrics_path == "/stats"
    assert make_app().config.metrics_path == "/stats"
    assert given(args, GatewayConfig).metrics_path == "/stats"


@pytest.mark.parametrize("item", SERVER, ids=lambda item: item.name)
def test_every_server_option_is_a_keyword_an_ini_key_and_a_flag_of_serve_and_demo(item):
    text, value = SAMPLES[item.name]
    settings = {item.name: text, **({"certfile": "cert.pem"} if item.name == "keyfile" else {})}
    assert getattr(ServerConfig(**settings), item.name) == value
    assert getattr(ServerConfig.load(settings, INI), item.name) == value
    for command in ("serve", "demo"):
        argv = [command] + [arg for name, setting in settings.items() for arg in (cli_flag(name), setting)]
        assert getattr(given(build_parser().parse_args(argv), ServerConfig), item.name) == value


def test_the_request_limits_are_environment_variables_and_reach_the_handler():
    """gunicorn listens itself: host, port and TLS are its own; the request limits and the
    reload's drain time are ours."""
    assert [item.name for item in SERVER if item.environment] == ["header_timeout", "max_header_size",
                                                                  "keepalive_timeout", "drain_timeout"]
    environ = {item.environment_variable: SAMPLES[item.name][0] for item in SERVER if item.environment}
    config = ServerConfig.from_environment(environ)
    assert (config.header_timeout, config.max_header_size, config.keepalive_timeout) == (2.5, 4096, 7.0)
    assert config.drain_timeout == 12.0
    assert (config.host, config.port) == (ServerConfig.host, ServerConfig.port)
    handler = handler_class(config)
    assert issubclass(handler, GatewayHandler)
    assert (handler.header_timeout, handler.max_header_size, handler.keepalive_timeout) == (2.5, 4096, 7.0)
    server = make_server(not_found_app, ServerConfig(port=0, max_header_size="1000"))
    assert server.handler_class.max_header_size == 1000


def test_defaults_agree_everywhere():
    keyword = WebSocketGateway(not_found_app, "/run/ws").config
    assert keyword == make_app({}, docroot="/run/ws").config
    assert keyword == given(build_parser().parse_args(["serve", "--docroot", "/run/ws"]), GatewayConfig)
    assert keyword == GatewayConfig.from_environment({"OUISTITI_GW_DOCROOT": "/run/ws"})
    assert ServerConfig() == given(build_parser().parse_args(["demo"]), ServerConfig) == ServerConfig.load({}, INI)
    for name in ("header_timeout", "max_header_size", "keepalive_timeout"):
        assert getattr(GatewayHandler, name) == getattr(ServerConfig(), name)
    assert (keyword.mode, keyword.allow, keyword.max_connections) == ("pipe", ("*",), 10000)


def test_the_keepalive_wait_is_not_named_like_the_sessions_idle_timeout():
    assert not hasattr(GatewayHandler, "idle_timeout")
    assert GatewayHandler.keepalive_timeout == 60 and GatewayConfig.idle_timeout == 90


def test_help_shows_each_default_and_choices_from_the_schema():
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    actions = {action.dest: action for action in serve._actions}
    for item in options(GatewayConfig) + options(ServerConfig):
        action = actions[item.name]
        assert action.default is None  # not given: the schema's default applies
        assert item.help in action.help
        assert ("(required)" if item.required else f"(default: {item.default_text})") in action.help
    assert actions["mode"].choices == ("pipe", "direct")
    assert actions["proxy_protocol"].choices == ("v1", "v2")


@pytest.mark.parametrize("item", NUMBERS, ids=lambda item: item.name)
def test_a_bad_number_names_the_option_as_its_source_spells_it(item):
    schema = GatewayConfig if item in options(GatewayConfig) else ServerConfig
    kind = item.kind.__name__
    for source in (KEYWORD, INI, ENVIRONMENT, COMMAND_LINE):
        with pytest.raises(ConfigurationError) as refused:
            schema.load({**BASE, item.name: "lots"} if schema is GatewayConfig else {item.name: "lots"}, source)
        assert str(refused.value) == f"{source.spell(item.name)} = 'lots' is not a valid {kind}"
        error = refused.value
        assert (error.key, error.source, error.reason) == (item.name, source, str(error))
        assert refused.value.setting == source.spell(item.name)
    with pytest.raises(ConfigurationError, match=rf"^{item.name} = -1(\.0)? is less than"):
        schema(**({**BASE, item.name: -1} if schema is GatewayConfig else {item.name: -1}))


@pytest.mark.parametrize("name, value, message", [
    ("mode", "sideways", "mode = 'sideways' is not one of pipe, direct"),
    ("proxy_protocol", "v3", "proxy_protocol = 'v3' is not one of v1, v2"),
    ("port", "70000", "port = 70000 is more than 65535"),
    ("max_header_size", "0", "max_header_size = 0 is less than 1"),
    ("idle_timeout", "nan", "idle_timeout = nan is not a finite number"),
    ("max_frame_rate", "inf", "max_frame_rate = inf is not a finite number"),
])
def test_values_out_of_their_range_are_refused(name, value, message):
    schema = ServerConfig if name in names(ServerConfig) else GatewayConfig
    with pytest.raises(ConfigurationError, match=f"^{re.escape(message)}$") as refused:
        schema.load({**BASE, name: value} if schema is GatewayConfig else {name: value}, INI)
    assert refused.value.key == name


def test_an_empty_choice_is_the_default_and_case_does_not_matter():
    config = GatewayConfig.load({**BASE, "mode": "", "proxy_protocol": "V2"}, INI)
    assert (config.mode, config.proxy_protocol) == ("pipe", "v2")
    assert GatewayConfig.load({**BASE, "proxy_protocol": ""}, INI).proxy_protocol == ""


def test_lists_parse_from_strings_and_from_sequences():
    assert GatewayConfig(docroot="/d", allow=" a ,, b ").allow == ("a", "b")
    assert GatewayConfig(docroot="/d", allow=["a", "b"]).allow == GatewayConfig(docroot="/d", allow="a, b").allow
    assert GatewayConfig(docroot="/d", deny="").deny == ()
    assert options(GatewayConfig)[1].kind == Patterns


def test_numbers_parse_once_into_their_types():
    config = GatewayConfig.load({**BASE, "max_connections": "7", "ping_interval": "1.5", "idle_timeout": "2"}, INI)
    assert (config.max_connections, config.ping_interval, config.idle_timeout) == (7, 1.5, 2.0)
    assert isinstance(config.idle_timeout, float) and isinstance(config.max_connections, int)
    assert GatewayConfig(docroot="/d", max_connections=7.0).max_connections == 7


@pytest.mark.parametrize("source, message", [
    (KEYWORD, "no docroot: set docroot to the directory of the UNIX sockets"),
    (ENVIRONMENT, "no docroot: set OUISTITI_GW_DOCROOT to the directory of the UNIX sockets"),
    (COMMAND_LINE, "no docroot: set --docroot to the directory of the UNIX sockets"),
])
def test_a_missing_docroot_names_it_as_its_source_spells_it(source, message):
    with pytest.raises(ConfigurationError, match=f"^{message}$"):
        GatewayConfig.load({}, source)


def test_unknown_options_are_refused_by_every_source():
    with pytest.raises(ConfigurationError, match="^unknown setting max_conections: did you mean ") as refused:
        WebSocketGateway(not_found_app, "/run/ws", max_conections=5)
    assert refused.value.key == "max_conections"
    with pytest.raises(ConfigurationError,
                       match=r"^unknown setting max_conections: did you mean max_connections\? \(known: docroot,"):
        make_app({}, docroot="/run/ws", max_conections="5")
    with pytest.raises(ConfigurationError, match=r"^unknown setting hots: did you mean host\? \(known: host, port,"):
        ServerConfig.load({"hots": "0.0.0.0"}, INI)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--max-conections", "5"])


def test_an_unknown_variable_is_refused_even_if_it_is_another_schemas():
    environ = {"OUISTITI_GW_DOCROOT": "/run/ws", "OUISTITI_GW_MAX_HEADER_SIZE": "4096", "OTHER_MAX_CONECTIONS": "1"}
    assert GatewayConfig.from_environment(environ).docroot == "/run/ws"  # a server option is not a typo
    assert ServerConfig.from_environment(environ).max_header_size == 4096
    for schema in (GatewayConfig, ServerConfig):
        with pytest.raises(ConfigurationError, match=r"^unknown setting OUISTITI_GW_MAX_CONECTIONS: did you mean "
                           r"OUISTITI_GW_MAX_CONNECTIONS\? \(known: OUISTITI_GW_DOCROOT, ") as refused:
            schema.from_environment({**environ, "OUISTITI_GW_MAX_CONECTIONS": "5"})
        assert refused.value.key == "max_conections"
    with pytest.raises(ConfigurationError, match=r"^unknown setting OUISTITI_GW_PORT \(known: "):
        ServerConfig.from_environment({"OUISTITI_GW_PORT": "80"})  # gunicorn's -b says where it listens


def test_keyfile_without_certfile_is_refused():
    with pytest.raises(ConfigurationError, match="^--keyfile given without --certfile$"):
        ServerConfig.load({"keyfile": "key.pem"}, COMMAND_LINE)
    with pytest.raises(ConfigurationError, match="^keyfile given without certfile$"):
        ServerConfig(keyfile="key.pem")


def test_config_and_keywords_together():
    config = GatewayConfig(docroot="/run/ws", deny="internal/*")
    gateway = WebSocketGateway(not_found_app, config=config, max_connections=3)
    assert (gateway.config.deny, gateway.config.max_connections) == (("internal/*",), 3)
    assert WebSocketGateway(not_found_app, "/other", config=config).docroot == "/other"
    with pytest.raises(ConfigurationError, match="^unknown setting max_conections: did you mean max_connections"):
        WebSocketGateway(not_found_app, config=config, max_conections=3)


def test_the_error_is_a_gateway_error_and_no_value_error():
    error = ConfigurationError("max_connections = 'lots' is not a valid int", "max_connections", INI)
    assert isinstance(error, GatewayError) and not isinstance(error, (ValueError, AppImportError))
    placed = error.at("gw.ini [app:main]")
    assert str(placed) == "gw.ini [app:main]: max_connections = 'lots' is not a valid int"
    assert (placed.key, placed.reason, placed.source.where, placed.source.spell("x")) == (
        "max_connections", error.reason, "gw.ini [app:main]", "x")


def test_what_gunicorn_calls_raises_a_configuration_error_gunicorn_takes_for_a_load_failure(monkeypatch):
    """make_app() and the PasteDeploy factories are what gunicorn calls (with or without our
    worker): their error is also gunicorn's AppImportError (one line, exit 4), and still the
    ConfigurationError the public API promises."""
    monkeypatch.delenv("OUISTITI_GW_DOCROOT", raising=False)
    for call in (make_app, lambda: make_app({}, docroot="/run/ws", max_connections="lots"),
                 lambda: make_filter({}, docroot="/run/ws", max_connections="lots")):
        with pytest.raises(ConfigurationError) as refused:
            call()
        assert isinstance(refused.value, AppImportError)


def test_an_ini_file_places_the_error_in_its_section(tmp_path):
    path = tmp_path / "gw.ini"
    path.write_text("[app:main]\nuse = egg:ouistiti_gw#main\ndocroot = /run/ws\nmax_connections = lots\n")
    with pytest.raises(ConfigurationError) as refused:
        IniFile(str(path)).load()
    assert str(refused.value) == f"{path} [app:main]: max_connections = 'lots' is not a valid int"
    assert refused.value.source.where == f"{path} [app:main]" and refused.value.key == "max_connections"


@pytest.mark.parametrize("hosts", ["::1", "[::1]", "gw.example, *.example.org", "127.0.0.1", "*"])
def test_allowed_hosts_without_ports_are_accepted(hosts):
    assert GatewayConfig(docroot="/d", allowed_hosts=hosts).allowed_hosts == tuple(
        item.strip() for item in hosts.split(","))


def test_a_setting_far_from_every_known_one_gets_no_guess():
    with pytest.raises(ConfigurationError, match=r"^unknown setting colour \(known: docroot,"):
        GatewayConfig.load({"docroot": "/d", "colour": "blue"}, INI)


def test_auth_request_and_authorize_exclude_each_other_and_placeholders_need_one():
    with pytest.raises(ConfigurationError, match="^auth_request and authorize are both set: choose one$"):
        GatewayConfig(docroot="/run/ws", auth_request="/auth", authorize="m:f")
    with pytest.raises(ConfigurationError, match=r"^--allow/--deny use \{user\} or \{group\}, which needs"):
        GatewayConfig.load({**BASE, "deny": "users/{user}/x"}, COMMAND_LINE)
    with pytest.raises(ConfigurationError, match=r"the only placeholders are \{user\} and \{group\}"):
        GatewayConfig(docroot="/run/ws", auth_request="/auth", allow="{users}/*")
    with pytest.raises(ConfigurationError, match=r"^auth_recheck needs auth_request or authorize$"):
        GatewayConfig.load({**BASE, "auth_recheck": "1"}, INI)


@pytest.mark.parametrize("path", ["auth", "/auth?x=1", "/a b", "/a%2f", "/café", "/a\n"])
def test_auth_request_is_a_plain_path(path):
    with pytest.raises(ConfigurationError, match="is not a plain absolute path"):
        GatewayConfig(docroot="/run/ws", auth_request=path)


def test_admin_path_is_a_plain_path_and_not_the_metrics_path():
    with pytest.raises(ConfigurationError, match="is not a plain absolute path"):
        GatewayConfig(docroot="/run/ws", admin_path="admin")
    with pytest.raises(ConfigurationError, match="^--admin-path and --metrics-path are the same path: choose two$"):
        GatewayConfig.load({**BASE, "admin_path": "/x", "metrics_path": "/x"}, COMMAND_LINE)
    with pytest.raises(ConfigurationError, match="^admin_allow = "):
        GatewayConfig(docroot="/run/ws", admin_allow="localhost")


@pytest.mark.parametrize("spec", ["module", "module:", ":f", "a b:f", "m:f()"])
def test_authorize_is_module_colon_callable(spec):
    with pytest.raises(ConfigurationError, match="is not module:callable"):
        GatewayConfig(docroot="/run/ws", authorize=spec)
