"""greenbridge: a gevent WebSocket server that gives every client its own PHP process."""

import os

__version__ = "0.1.0"

# Greenbridge.php, the PHP library shipped in the package: `greenbridge --php-lib`
# prints this path, and every PHP process gets it in WSS_PHP_LIB.
PHP_LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "php", "Greenbridge.php")
