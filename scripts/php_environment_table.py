#!/usr/bin/env python3
"""Write README.rst's table of the WSS_* variables from greenbridge/php_environment.py.

    .venv/bin/python scripts/php_environment_table.py          # rewrite the table
    .venv/bin/python scripts/php_environment_table.py --check  # exit 1 if it is stale

The table sits between two comment lines of README.rst (BEGIN and END below);
tests/test_php_environment.py runs --check.
"""

import argparse
import os
import sys
import textwrap

from greenbridge.php_environment import VARIABLES

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.rst")
BEGIN = (".. The table below is generated from greenbridge/php_environment.py by "
         "scripts/php_environment_table.py.\n")
END = ".. End of the generated table.\n"
COLUMNS = ("variable", "from", "value")
VALUE_WIDTH = 60


def table():
    """The RST simple table: a continuation line leaves the first column blank."""
    name_width = max(len(COLUMNS[0]), *(len(variable.name) for variable in VARIABLES))
    source_width = max(len(COLUMNS[1]), *(len(variable.source) for variable in VARIABLES))
    widths = (name_width, source_width, VALUE_WIDTH)

    def line(*cells):
        return " ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip() + "\n"

    rule = line(*("=" * width for width in widths))
    rows = [rule, line(*COLUMNS), rule]
    for variable in VARIABLES:
        value_lines = textwrap.wrap(variable.meaning, VALUE_WIDTH, break_on_hyphens=False,
                                    break_long_words=False)
        rows.append(line(variable.name, variable.source, value_lines[0]))
        rows.extend(line("", "", more) for more in value_lines[1:])
    rows.append(rule)
    return "".join(rows)


def with_table(readme_text):
    """README.rst's text with the generated table between BEGIN and END."""
    start = readme_text.index(BEGIN) + len(BEGIN)
    end = readme_text.index(END, start)
    return readme_text[:start] + "\n" + table() + "\n" + readme_text[end:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 when README.rst's table is not the one "
                             "the declarations give")
    arguments = parser.parse_args()
    with open(README, encoding="utf-8") as readme:
        current = readme.read()
    wanted = with_table(current)
    if arguments.check:
        if wanted != current:
            sys.exit("README.rst's environment table differs from greenbridge/php_environment.py;"
                     " run: .venv/bin/python scripts/php_environment_table.py")
        return
    if wanted != current:
        with open(README, "w", encoding="utf-8") as readme:
            readme.write(wanted)
        print("README.rst: environment table rewritten")


if __name__ == "__main__":
    main()
