"""The README's Composer recipe, run by real Composer without network: it installs and
autoloads the PHP library, and a script loading it so serves a real bridge."""

import json
import os
import subprocess

from websockets.sync.client import connect

from greenbridge import __version__
from support import php_lib_path, readme_snippet

# What the README says to replace with the folder `dirname "$(greenbridge --php-lib)"` prints.
PATH_PLACEHOLDER = "/path/to/greenbridge/php"


def composer_project(tmp_path):
    """A project made of the README's composer.json, its path substituted, after
    `composer install`; returns its folder.

    Composer gets a home of its own under tmp_path (the user's is left alone), and
    no network: packagist.org is switched off in that home's global configuration
    (so the recipe is run as printed, without a line added), and
    COMPOSER_DISABLE_NETWORK makes any other download fail instead of happening."""
    recipe = readme_snippet("composer-json")
    assert recipe.count(PATH_PLACEHOLDER) == 1, recipe
    project = tmp_path / "project"
    project.mkdir()
    library_folder = os.path.dirname(php_lib_path())
    (project / "composer.json").write_text(recipe.replace(PATH_PLACEHOLDER, library_folder))
    home = tmp_path / "composer-home"
    environment = dict(os.environ, HOME=str(home), COMPOSER_HOME=str(home),
                       COMPOSER_CACHE_DIR=str(home / "cache"), COMPOSER_DISABLE_NETWORK="1",
                       COMPOSER_ALLOW_SUPERUSER="1")
    for command in (["config", "--global", "repositories.packagist.org", "false"],
                    ["install", "--no-interaction", "--no-progress"]):
        result = subprocess.run(["composer", *command], cwd=project, env=environment,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    return project


def test_readme_composer_recipe_installs_and_autoloads_the_library(tmp_path):
    project = composer_project(tmp_path)
    installed = json.loads((project / "vendor" / "composer" / "installed.json").read_text())
    assert [(package["name"], package["version"]) for package in installed["packages"]] == \
        [("greenbridge/greenbridge", __version__)]
    # class_exists() autoloads: true only when Composer's autoloader finds the class.
    result = subprocess.run(
        ["php", "-r", 'require "vendor/autoload.php"; '
                      'echo class_exists("Greenbridge\\\\Connection") ? "loaded" : "missing";'],
        cwd=project, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "loaded"), result.stderr


def test_script_loading_the_library_through_composer_echoes_through_a_bridge(start_bridge,
                                                                              tmp_path):
    project = composer_project(tmp_path)
    handler = project / "echo.php"
    handler.write_text("<?php\n"
                       "require __DIR__ . '/vendor/autoload.php';\n"
                       "$client = Greenbridge\\Connection::connect();\n"
                       "while (($message = $client->receive()) !== null) {\n"
                       "    $client->send($message);\n"
                       "}\n")
    bridge = start_bridge("--message-mode", "framed", script=str(handler))
    with connect(bridge.url()) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=10) == b"\x00\xff"
