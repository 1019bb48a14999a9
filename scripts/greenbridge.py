#!/usr/bin/env python3
"""Entry script for deployments: greenbridge.py -c bridge.conf"""

import os
import sys

# This file has the package's name: keep its own folder off the import path,
# or "import greenbridge" would import this script instead of the package.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _here]

if __name__ == "__main__":
    from greenbridge.__main__ import run

    run()
else:
    # Imported as "greenbridge" by the ``greenbridge`` console script that pip
    # installs into this same folder: hand it the real package instead.
    import importlib

    del sys.modules[__name__]
    sys.modules[__name__] = importlib.import_module(__name__)
