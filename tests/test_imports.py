"""What greenbridge imports: no import cycles, and each server loads the TLS and ACME
stacks only in the modes that use them.

What a server loaded is read as a user would check it: CPython's own report of
every import (``-X importtime``, set through PYTHONPROFILEIMPORTTIME) and the
shared objects the kernel maps into the process (``/proc/PID/maps``).
"""

import ast
import os
import re
from collections import defaultdict

from support import ECHO_PHP, REPO, client_context, stop_cleanly
from tls_client import connect_wss

PACKAGE_DIR = os.path.join(REPO, "greenbridge")

# Top-level names of what each stack imports (pyOpenSSL is "OpenSSL"; certbot's
# ACME library is "acme"; dnspython is "dns").
TLS_STACK = {"OpenSSL", "cryptography"}
# What --broker needs (redis-py and its parser).
REDIS_STACK = {"redis", "hiredis"}
ACME_STACK = {"certbot", "acme", "josepy", "simple_acme_dns", "dns", "requests", "urllib3"}
# cryptography's compiled part, which pyOpenSSL runs on: in the maps once TLS is loaded.
TLS_SHARED_OBJECT = re.compile(r"/cryptography/\S*\.so")

_IMPORT_TIME_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|(\s*)(\S+)$")


# -- the import graph, from the source (ast) --------------------------------------

def greenbridge_modules():
    """{dotted module name: path} for every module and package of greenbridge."""
    modules = {}
    for directory, _, files in os.walk(PACKAGE_DIR):
        for file_name in files:
            if file_name.endswith(".py"):
                path = os.path.join(directory, file_name)
                name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                modules[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return modules


def imported_names(module, path, modules):
    """What `module` imports (anywhere in it, a function's body included): greenbridge's
    modules only, each with the packages it runs on the way (their __init__)."""
    is_package = path.endswith("__init__.py")
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read(), path)
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package this module is in
                parts = module.split(".")[:len(module.split(".")) - node.level + is_package]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                name = base + "." + alias.name
                targets.add(name if name in modules else base)
    imported = set()
    for target in targets:
        parts = target.split(".")
        imported.update(".".join(parts[:end]) for end in range(2, len(parts) + 1))
    return {name for name in imported if name in modules and name != module}


def import_graph():
    modules = greenbridge_modules()
    return {module: imported_names(module, path, modules) for module, path in modules.items()}


def package_of(module, graph):
    """greenbridge.tls for greenbridge.tls.layer; a top-level module stands for itself."""
    parts = module.split(".")
    package = ".".join(parts[:2])
    return package if len(parts) > 2 or any(m.startswith(package + ".") for m in graph) else module


def cycles(graph):
    """Every cycle found by a depth-first walk, each as a list of nodes (first repeated last)."""
    found, state = [], {}
    path = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for following in sorted(graph[node]):
            if state.get(following) == "open":
                found.append(path[path.index(following):] + [following])
            elif following not in state:
                visit(following)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_greenbridge_has_no_import_cycle_between_modules():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_greenbridge_has_no_import_cycle_between_its_packages():
    """tls/ must not import acme/ while acme/ imports tls/ (each module on its own may be fine)."""
    graph = import_graph()
    packages, witnesses = defaultdict(set), {}
    for module, imported in graph.items():
        for name in imported:
            edge = package_of(module, graph), package_of(name, graph)
            if edge[0] != edge[1]:
                packages[edge[0]].add(edge[1])
                witnesses.setdefault(edge, "%s imports %s" % (module, name))
        packages.setdefault(package_of(module, graph), set())
    found = cycles(packages)
    assert not found, "package import cycles:\n" + "\n".join(
        " -> ".join(cycle) + "  (" + "; ".join(witnesses[pair] for pair in zip(cycle, cycle[1:]))
        + ")" for cycle in found)


# -- what a running server loaded ---------------------------------------------------

def imported_packages(bridge):
    """Top-level names of every module the server's processes imported so far, from
    CPython's -X importtime lines in its log."""
    names = set()
    for line in bridge.lines:
        match = _IMPORT_TIME_LINE.match(line)
        if match:
            names.add(match.group(2).split(".")[0])
    assert "gevent" in names, "no -X importtime report in the log:\n" + bridge.log
    return names


def mapped_tls_objects(pid):
    with open("/proc/%d/maps" % pid, encoding="utf-8") as maps:
        return sorted(set(TLS_SHARED_OBJECT.findall(maps.read())))


IMPORT_REPORT = {"PYTHONPROFILEIMPORTTIME": "1"}


def test_plain_server_and_its_workers_load_neither_tls_nor_acme_nor_redis(start_bridge):
    bridge = start_bridge("--workers", "2", env=IMPORT_REPORT)
    for _ in range(2):  # a connection or two: what serving one imports counts too
        bridge.assert_serves()
    loaded = imported_packages(bridge)
    assert not loaded & (TLS_STACK | ACME_STACK | REDIS_STACK), \
        sorted(loaded & (TLS_STACK | ACME_STACK | REDIS_STACK))
    assert len(bridge.workers()) == 2
    for process in [bridge.process.pid] + [worker.pid for worker in bridge.workers()]:
        assert mapped_tls_objects(process) == [], process
    stop_cleanly(bridge)


def test_wss_server_loads_tls_but_not_acme(start_bridge):
    bridge = start_bridge("--tls-mode", "internal", env=IMPORT_REPORT, script=ECHO_PHP)
    with connect_wss(bridge.url(), ssl=client_context()) as ws:
        ws.send(b"over TLS")
        assert ws.recv(timeout=20) == b"over TLS"
    loaded = imported_packages(bridge)
    assert TLS_STACK <= loaded  # the witness works: what TLS needs is reported
    assert mapped_tls_objects(bridge.process.pid), "cryptography's shared object not mapped"
    assert not loaded & ACME_STACK, sorted(loaded & ACME_STACK)
    stop_cleanly(bridge)


def test_a_server_with_a_broker_loads_redis(start_node):
    node = start_node(env=IMPORT_REPORT)
    assert REDIS_STACK <= imported_packages(node)  # the witness of the test above works
    stop_cleanly(node)
