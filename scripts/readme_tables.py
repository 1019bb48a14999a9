#!/usr/bin/env python3
"""Write README.rst's option tables from the declarations (greenbridge/settings/).

    .venv/bin/python scripts/readme_tables.py          # rewrite the tables in README.rst
    .venv/bin/python scripts/readme_tables.py --check  # exit 1 when README.rst differs

Each table stands between the comment lines ``.. option-table: NAME`` (NAME: a
section of the declarations: general, tls, acme, channels) and ``.. end of option-table``.
A row: the long flag (repeatable ones say so), the short flag (a column only
where a section has one), the default as a reader wants it (``readme_default``,
else the declared one), the WSS_CONFIG_* variable and the README meaning
(``readme``, else the help). tests/test_settings.py fails when they differ.
"""

import os
import re
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.rst")
sys.path.insert(0, REPO)

from greenbridge.settings.parser import SECTIONS  # noqa: E402 (after the path is set)

LINE_WIDTH = 130  # what the meaning column is wrapped to, with the columns before it
HEADERS = ("flag", "short", "default", "environment variable", "meaning")
_TABLE = re.compile(r"(^\.\. option-table: (\w+)\n\n)(.*?)(^\.\. end of option-table$)",
                    re.MULTILINE | re.DOTALL)
_LITERAL = re.compile(r"``.+?``")
_NO_BREAK = "\0"


def shown_default(setting):
    if setting.readme_default is not None:
        return setting.readme_default
    if setting.default is None:
        return "none"
    if setting.default is False:  # a switch
        return "off"
    if isinstance(setting.default, float) and setting.default.is_integer():
        return "%d" % setting.default
    return str(setting.default)


def rows(section):
    for setting in section.settings:
        yield (setting.long_flag + (" (repeatable)" if setting.repeatable else ""),
               setting.short_flag or "", shown_default(setting), setting.env or "",
               setting.readme or setting.help)


def table(section):
    """The RST simple table of a section's settings, one row (and its wrapped lines) each."""
    body = list(rows(section))
    columns = [column for column in range(len(HEADERS))
               if column != 1 or any(row[1] for row in body)]  # "short", where there are any
    widths = [max(len(HEADERS[column]), *(len(row[column]) for row in body))
              for column in columns[:-1]]
    widths.append(LINE_WIDTH - sum(widths) - len(widths))

    def line(cells):
        return " ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    border = line("=" * width for width in widths)
    lines = [border, line(HEADERS[column] for column in columns), border]
    for row in body:
        cells = [row[column] for column in columns]
        meaning = _wrap(cells[-1], widths[-1])
        lines.append(line(cells[:-1] + meaning[:1]))
        lines.extend(line([""] * (len(cells) - 1) + [more]) for more in meaning[1:])
    lines.append(border)
    return "\n".join(lines) + "\n\n"


def _wrap(text, width):
    """Lines of at most `width` (longer words stay whole), none breaking a ``literal``."""
    kept = _LITERAL.sub(lambda match: match.group().replace(" ", _NO_BREAK), text)
    return [line.replace(_NO_BREAK, " ") for line in textwrap.wrap(
        kept, width, break_long_words=False, break_on_hyphens=False)]


def updated(readme):
    """README.rst's text with every option table written from the declarations."""
    sections = {section.name: section for section in SECTIONS}
    missing = set(sections) - set(match.group(2) for match in _TABLE.finditer(readme))
    if missing:
        raise SystemExit("README.rst has no '.. option-table: %s' ... '.. end of option-table'"
                         % sorted(missing)[0])
    return _TABLE.sub(lambda match: match.group(1) + table(sections[match.group(2)])
                      + match.group(4), readme)


def main(argv):
    with open(README, encoding="utf-8") as readme:
        text = readme.read()
    new = updated(text)
    if "--check" in argv:
        if new != text:
            print("README.rst's option tables differ from the declarations in "
                  "greenbridge/settings/; run: .venv/bin/python scripts/readme_tables.py",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        with open(README, "w", encoding="utf-8") as readme:
            readme.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
