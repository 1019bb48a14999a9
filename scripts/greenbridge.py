#!/usr/bin/env python3
"""Entry script for deployments: greenbridge.py -c bridge.conf"""

import os
import sys

# This file has the package's name: keep its own folder off the import path,
# or "import greenbridge" would import this script instead of the package.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _here]

from greenbridge.__main__ import run  # noqa: E402

if __name__ == "__main__":
    run()
