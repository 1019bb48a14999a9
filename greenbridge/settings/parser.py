"""The command line and ``--help``, built from the declarations.

Precedence: flag > environment > config file > default (configargparse). A
repeatable option takes a list ``[a, b]`` in the environment and the config file.
"""

import configargparse

from greenbridge import __version__
from greenbridge.settings.acme import ACME
from greenbridge.settings.channels import CHANNELS
from greenbridge.settings.general import GENERAL
from greenbridge.settings.tls import TLS

SECTIONS = (GENERAL, TLS, ACME, CHANNELS)


def declared_settings():
    return [setting for section in SECTIONS for setting in section.settings]


class OneLineErrorParser(configargparse.ArgParser):
    """Bad input ends start-up with one line and exit status 2, not a usage dump."""

    def error(self, message):
        self.exit(2, "%s: error: %s\n" % (self.prog, message))

    @staticmethod
    def secret_values(options):
        """The strings the secret options hold, as parsed. PHP never sees them, under any
        variable name (php_environment.inherited_environment): a new secret option is safe by
        being declared so."""
        return tuple(secret for setting in declared_settings()
                     for secret in setting.secrets_in(getattr(options, setting.dest))
                     # An empty string would be "in" every value and withhold them all.
                     if secret)


def build_parser():
    parser = OneLineErrorParser(
        prog="greenbridge",
        description="WebSocket server that gives every client its own PHP process.",
        args_for_setting_config_path=["-c", "--config"],
        config_arg_help_message="config file (key = value lines, keys are the long flag names)",
        formatter_class=configargparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version="greenbridge " + __version__)
    for section in SECTIONS:
        container = parser if section.title is None else \
            parser.add_argument_group(section.title, section.description)
        for setting in section.settings:
            setting.add_to(container)
    return parser
