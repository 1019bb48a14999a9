"""The settings layer: every option declared once, the README's option tables written
from the declarations, and a layer that imports nothing of the server."""

import ast
import importlib.util
import os
import subprocess
import sys

from greenbridge.settings.parser import declared_settings
from support import README, REPO

FIX = "run: .venv/bin/python scripts/readme_tables.py"


def readme_tables():
    """scripts/readme_tables.py, as a module."""
    path = os.path.join(REPO, "scripts", "readme_tables.py")
    spec = importlib.util.spec_from_file_location("readme_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_text():
    with open(README, encoding="utf-8") as readme:
        return readme.read()


def test_readme_option_tables_are_written_from_the_declarations():
    assert readme_tables().main(["--check"]) == 0, \
        "README.rst's option tables differ from greenbridge/settings/; " + FIX


def test_a_readme_table_row_that_differs_from_its_declaration_is_caught():
    text = readme_text()
    general_table = text.index(".. option-table: general")
    row = text.index("--ws-host ", general_table)
    drifted = text[:row] + text[row:].replace("WSS_CONFIG_WS_HOST ", "WSS_CONFIG_WS_HOTS ", 1)
    assert drifted != text
    assert readme_tables().updated(drifted) == text


def test_every_option_has_its_own_flags_and_its_own_wss_config_variable():
    settings = declared_settings()
    flags = [flag for setting in settings for flag in setting.option_strings]
    variables = [setting.env for setting in settings if setting.env]
    attributes = [setting.attribute for setting in settings if setting.attribute]
    assert len(flags) == len(set(flags))
    assert len(variables) == len(set(variables))
    assert len(attributes) == len(set(attributes))
    # PHP never inherits WSS_CONFIG_* variables: a setting must not be named otherwise.
    assert all(variable.startswith("WSS_CONFIG_") for variable in variables)
    # Every setting can come from the environment; --php-lib is an action.
    assert [setting.long_flag for setting in settings if not setting.env] == ["--php-lib"]


def test_the_settings_layer_imports_nothing_of_the_server():
    """Parsing the command line loads only the settings layer: no gevent, no TLS or ACME
    stack, no server module."""
    listing = subprocess.run(
        [sys.executable, "-c", "import sys, greenbridge.cli; print('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
    loaded = {name for name in listing if name.split(".")[0] == "greenbridge"}
    assert loaded - {"greenbridge.cli"} <= set(_settings_layer()), loaded
    heavy = {"gevent", "geventwebsocket", "OpenSSL", "cryptography", "certbot", "josepy", "dns"}
    assert heavy & {name.split(".")[0] for name in listing} == set()


def test_the_settings_layer_has_no_import_cycle():
    """Its modules import only one another (late imports too), and no two import each other
    even through others (config.py and acme/settings.py used to)."""
    layer = _settings_layer()
    imports = {module: _greenbridge_imports(path) for module, path in layer.items()}
    for module, imported in imports.items():
        assert imported <= set(layer), (module, imported - set(layer))

    def reaches(start, goal, seen=()):
        return any(other == goal or (other not in seen and reaches(other, goal, (*seen, other)))
                   for other in imports[start])

    assert [module for module in layer if reaches(module, module)] == []


def _settings_layer():
    """{module: path} of the settings layer: config.py, settings/, acme/settings.py and the
    leaves they use."""
    package = os.path.join(REPO, "greenbridge")
    layer = {"greenbridge": "__init__.py", "greenbridge.config": "config.py",
             "greenbridge.http_token": "http_token.py", "greenbridge.acme": "acme/__init__.py",
             "greenbridge.acme.settings": "acme/settings.py",
             "greenbridge.settings": "settings/__init__.py"}
    layer.update(("greenbridge.settings." + name[:-3], "settings/" + name)
                 for name in os.listdir(os.path.join(package, "settings"))
                 if name.endswith(".py") and name != "__init__.py")
    return {module: os.path.join(package, path) for module, path in layer.items()}


def _greenbridge_imports(path):
    """The greenbridge modules a file imports, anywhere in it."""
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            # "from greenbridge.settings import checks": a module, not a name.
            imported.update(node.module + "." + alias.name for alias in node.names
                            if os.path.exists(os.path.join(
                                REPO, *node.module.split("."), alias.name + ".py")))
    return {name for name in imported if name.split(".")[0] == "greenbridge"}
