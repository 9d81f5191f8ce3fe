"""The shipped systemd units (contrib/systemd/), checked by systemd itself, and the ini they run.

``systemd-analyze verify`` loads each unit as systemd would from where the units' comments say
to copy them (/etc/systemd/system/), in a root of its own (``--root``): a copy of this system's
units (the targets the units order against) and the commands their Exec lines name, where they
name them (``/usr/local/bin/ouistiti-gw`` is the virtualenv's). verify reports a wrong key or
value as a warning and still exits 0, so its output must be empty too.
"""
import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ouistiti_gw.servers.inifile import IniFile
from support import BIN, ROOT

pytestmark = pytest.mark.systemd

SHIPPED = ROOT / "contrib" / "systemd"
GATEWAY_UNIT = SHIPPED / "ouistiti-gw.service"
SAMPLE_UNIT = SHIPPED / "ouistiti-gw-sample@.service"
TEMPLATE_INI = SHIPPED / "gateway.ini"
#: Where the units' comments say to copy them, and systemd's own units (the targets).
UNIT_DIRECTORY = "etc/systemd/system"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
#: The instances the sample unit documents: the demo page's three panels.
SAMPLES = ("echo", "chat", "jsonrpc")


def unit(path: Path) -> configparser.ConfigParser:
    """A unit file's sections and settings (keys kept as written: systemd's are case-sensitive)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def executables(path: Path, instance: str = "") -> list[str]:
    """The absolute commands of a unit's Exec lines, with the instance name in for ``%i``."""
    service = unit(path)["Service"]
    return [service[key].split()[0].replace("%i", instance) for key in service if key.startswith("Exec")]


def provide(root: Path, command: str) -> None:
    """Put ``command`` in ``root``: this system's own, else the virtualenv's of that name."""
    source = Path(command) if Path(command).exists() else BIN / Path(command).name
    target = root / command.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def verify(root: Path, name: str) -> str:
    """``systemd-analyze verify`` of /etc/systemd/system/NAME in ``root``: its output, asserting success."""
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}", f"/{UNIT_DIRECTORY}/{name}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A root holding the shipped units where they go, systemd's units and the Exec commands."""
    assert shutil.which("systemd-analyze"), "systemd-analyze is not installed (bash .ci/run installs systemd)"
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    (root / UNIT_DIRECTORY).mkdir(parents=True)
    for path in (GATEWAY_UNIT, SAMPLE_UNIT):
        shutil.copy2(path, root / UNIT_DIRECTORY)
    commands = executables(GATEWAY_UNIT) + [command for name in SAMPLES
                                           for command in executables(SAMPLE_UNIT, name)]
    for command in commands:
        provide(root, command)
    return root


def test_the_gateway_unit_verifies(root):
    assert verify(root, GATEWAY_UNIT.name) == ""


@pytest.mark.parametrize("name", SAMPLES)
def test_each_documented_sample_instance_verifies(root, name):
    assert verify(root, SAMPLE_UNIT.name.replace("@", f"@{name}")) == ""


def test_an_instance_without_its_server_does_not_verify(root):
    """What the tests above rely on: verify does look for the instance's command."""
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                             f"/{UNIT_DIRECTORY}/{SAMPLE_UNIT.name.replace('@', '@nosuchserver')}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "/usr/local/bin/websocket_nosuchserver is not executable" in result.stderr


def test_the_gateway_runs_the_shipped_template_ini():
    """ExecStart names the path the template's header says to copy it to."""
    ini_path = unit(GATEWAY_UNIT)["Service"]["ExecStart"].split()[-1]
    assert ini_path == "/etc/ouistiti-gw/gateway.ini"
    assert f"cp contrib/systemd/gateway.ini {ini_path}" in TEMPLATE_INI.read_text()


def test_the_units_share_one_runtime_directory_the_ini_names_as_docroot():
    """Both units run as the same user and group in the same RuntimeDirectory (systemd gives the
    directory to the user of the unit that starts), which the gateway's ini and the sample
    servers' -R name as the docroot."""
    gateway, sample = unit(GATEWAY_UNIT)["Service"], unit(SAMPLE_UNIT)["Service"]
    shared = ("User", "Group", "RuntimeDirectory", "RuntimeDirectoryMode", "RuntimeDirectoryPreserve")
    assert {key: gateway.get(key) for key in shared} == {key: sample.get(key) for key in shared}
    assert gateway["RuntimeDirectoryPreserve"] == "yes"  # stopping one unit keeps the others' sockets
    docroot = "/run/" + gateway["RuntimeDirectory"]
    assert re.search(rf" -R {re.escape(docroot)} -n %i ", sample["ExecStart"])
    ini = IniFile(str(TEMPLATE_INI))
    assert ini.parser.get(ini.section_of("docroot"), "docroot") == docroot


def test_the_template_ini_loads_with_every_setting_it_suggests(tmp_path):
    """The template loads as `ouistiti-gw serve` loads it; so does it with each `#key = value` of
    the gateway's section turned into a setting (unknown names and bad values are refused): the
    settings it suggests are real ones."""
    IniFile(str(TEMPLATE_INI)).load()
    text = TEMPLATE_INI.read_text()
    gateway_section, server_section = text.split("[server:main]")
    suggestion = re.compile(r"^#(\w+ = )", flags=re.MULTILINE)
    suggested = {match.rstrip(" =") for match in suggestion.findall(gateway_section)}
    assert {"allow", "deny", "allowed_hosts", "origins", "trusted_proxies", "proxy_protocol"} <= suggested
    uncommented = tmp_path / "gateway.ini"
    uncommented.write_text(suggestion.sub(r"\1", gateway_section) + "[server:main]" + server_section)
    app, server = IniFile(str(uncommented)).load()
    assert server is not None
    assert app.config.allowed_hosts == ("ws.example.com",) and app.config.proxy_protocol == "v2"
