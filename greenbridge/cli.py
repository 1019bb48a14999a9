"""The command line: flags, environment and config file into a Config, and main().

Every option is declared once in greenbridge/settings/, which builds the parser
and ``--help`` from the declarations (settings/parser.py).
"""

import os
import sys

from greenbridge import config as cfg
from greenbridge.settings.parser import build_parser
from greenbridge.settings.values import ConfigError


def parse_config(argv=None, environment=None):
    """Parse flags, environment and config file into a Config; exit 2 on bad input."""
    try:
        return load_config(argv, environment)
    except ConfigError as error:
        build_parser().error(str(error))


def load_config(argv=None, environment=None):
    """Like parse_config, but bad input raises ConfigError (for greenbridge.wsgi)."""
    environment = dict(os.environ if environment is None else environment)
    parser = build_parser()
    parser.error = _raise_config_error
    options = parser.parse_args(args=argv, env_vars=environment)
    return cfg.build_config(options, environment, parser.secret_values(options))


def _raise_config_error(message):
    raise ConfigError(message)


def main(argv=None):
    config = parse_config(argv)
    # Imported late: the server module needs gevent's monkey-patching, which
    # the entry points apply before anything else is imported.
    from greenbridge import server
    from greenbridge.logs import configure_logging

    configure_logging(config.log_level, config.log_format)
    sys.exit(server.run(config))
