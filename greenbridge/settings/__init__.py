"""The settings layer: every option declared once, and what is built from the declarations.

- ``declaration.py``: ``Setting``, one option's whole declaration (flags, WSS_CONFIG_*
  variable, value type, default, help, README row, secret or not), and the
  dataclass of a list of them.
- ``general.py``, ``tls.py``, ``acme.py``, ``channels.py``: the declarations, one module per
  section (the README's four option tables).
- ``values.py``: the value types that refuse a bad value, their limits, ``ConfigError``.
- ``routes.py``, ``origins.py``: the values of ``--route`` and ``--allow-origin``.
- ``parser.py``: the command line and ``--help``, built from the declarations.
- ``checks.py``: every check that looks at more than one option (or at a file),
  and the defaults that depend on another option: in one place.

``greenbridge/config.py`` (``Config``) and ``greenbridge/acme/settings.py``
(``AcmeSettings``) are the immutable settings objects built from them;
``scripts/readme_tables.py`` writes the README's option tables. Nothing here
imports the server: the layer is a leaf.
"""
