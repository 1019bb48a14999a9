"""One setting, declared once, and what is built from a list of declarations.

A ``Setting`` says everything about one option, in the way gunicorn's
config.py declares its settings: the attribute it becomes on the settings
object, its flags, its WSS_CONFIG_* variable, its value type (which refuses a
bad value), its default, its help for ``--help``, its README row, whether its
value is secret. From the declarations come the parser and ``--help``
(parser.py), the settings objects (``dataclass_of``: config.Config,
acme.settings.AcmeSettings) and the README's option tables
(scripts/readme_tables.py).
"""

from dataclasses import dataclass, field, make_dataclass
from typing import Any, Callable, Optional, Tuple


@dataclass(frozen=True)
class Setting:
    # The attribute on the settings object; None for an option that is an
    # action, not a setting (--php-lib).
    attribute: Optional[str]
    flags: str  # "-H --ws-host": short, then long
    help: str  # for --help
    env: Optional[str] = None  # its WSS_CONFIG_* variable
    type: Optional[Callable[[str], Any]] = None  # parses one value; ValueError refuses it
    default: Any = None
    # argparse's action: "append" (repeatable; a list [a, b] in the environment
    # and the config file), "store_true" (a switch), or an Action class.
    action: Any = None
    required: bool = False
    choices: Optional[Tuple[str, ...]] = None
    nargs: Any = None
    # The parsed value -> the settings object's. Default: a repeatable option's
    # values as a tuple, any other value as it is.
    value: Optional[Callable[[Any], Any]] = None
    # True: PHP never sees the value (config.Config.secret_values); or a
    # function giving the secret strings among the parsed value.
    secret: Any = False
    readme: Optional[str] = None  # the README row's meaning (RST); default: help
    readme_default: Optional[str] = None  # the README's default, when the parsed one reads badly

    @property
    def option_strings(self):
        return tuple(self.flags.split())

    @property
    def long_flag(self):
        return self.option_strings[-1]

    @property
    def short_flag(self):
        return self.option_strings[0] if len(self.option_strings) > 1 else None

    @property
    def dest(self):
        """argparse's name for the parsed value (options.<dest>)."""
        return self.long_flag[2:].replace("-", "_")

    @property
    def repeatable(self):
        return self.action == "append"

    def add_to(self, container):
        """Add the option to an argparse parser or argument group."""
        arguments = {"help": self.help}
        for name in ("type", "default", "action", "choices", "nargs"):
            if getattr(self, name) is not None:
                arguments[name] = getattr(self, name)
        if self.env:
            arguments["env_var"] = self.env
        if self.required:
            arguments["required"] = True
        return container.add_argument(*self.option_strings, **arguments)

    def value_of(self, parsed):
        """The settings object's value, from the parsed one."""
        if self.value is not None:
            return self.value(parsed)
        if self.repeatable:
            return tuple(parsed or ())
        return parsed

    def secrets_in(self, parsed):
        """The secret strings the parsed value holds (none for a setting not secret)."""
        if not self.secret or not parsed:
            return []
        if self.secret is not True:
            return list(self.secret(parsed))
        return [parsed] if isinstance(parsed, str) else list(parsed)


@dataclass(frozen=True)
class Section:
    """Settings that belong together: one README table (and one --help group when titled)."""
    name: str  # the README table's marker
    settings: Tuple[Setting, ...]
    title: Optional[str] = None  # --help group; None: among the main options
    description: Optional[str] = None


def declared_values(settings, options):
    """{attribute: value} of the declared settings, from parsed options."""
    return {setting.attribute: setting.value_of(getattr(options, setting.dest))
            for setting in settings if setting.attribute}


def dataclass_of(name, settings):
    """A frozen dataclass with a field for each setting, its default the declared one.

    A settings object subclasses it to add its other fields and properties."""
    fields = []
    for setting in settings:
        if setting.attribute:
            default = setting.value_of(setting.default)
            # A mutable default (the dict of --tls-dns-param) is made anew for each object.
            made = {"default_factory": default.copy} if isinstance(default, dict) \
                else {"default": default}
            fields.append((setting.attribute, Any, field(repr=not setting.secret, **made)))
    return make_dataclass(name, fields, frozen=True)
