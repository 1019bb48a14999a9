"""Where greenbridge relies on a dependency's private parts: one small module for each.

Each adapter names the versions it was checked against (``CHECKED_AGAINST``,
distribution name -> version) and says in its docstring what it relies on;
tests/test_adapters.py checks that against the installed versions and, when a
new version changed something, fails naming the dependency and both versions.
The adapters loaded only with their feature live beside it:
tls/openssl_binding.py (pyOpenSSL) and gunicorn_worker.py (gunicorn).
"""
