"""Private parts of dependencies: reached only through the adapters, and still there.

Each adapter names the versions it was checked against (CHECKED_AGAINST) and
says what it relies on; the checks here fail naming the dependency, the version
installed and the version checked, so that an upgrade that changed something
says where to look. What the adapters do end to end is tested with the features
(test_process, test_sockets, test_tls, test_wsgi, test_hardening).
"""

import ast
import importlib
import importlib.util
import inspect
import os
import textwrap
from importlib.metadata import version

import pytest
from OpenSSL import SSL

from support import REPO

ADAPTERS = ("greenbridge.adapters.gevent_hub", "greenbridge.adapters.gevent_popen",
            "greenbridge.adapters.gevent_pywsgi", "greenbridge.adapters.gevent_websocket",
            "greenbridge.tls.openssl_binding", "greenbridge.gunicorn_worker")
# Private names of the standard library, not of a dependency.
STANDARD_LIBRARY_PRIVATE = {"os._exit", "ipaddress._BaseNetwork"}


def assert_still_holds(adapter_name, dependency, facts):
    """`facts`: (what the adapter relies on, a callable that says whether it holds)."""
    adapter = importlib.import_module(adapter_name)
    changed = []
    for what, holds in facts:
        try:
            if not holds():
                changed.append(what)
        except Exception as error:  # a name gone, a call that now fails
            changed.append("%s (%s: %s)" % (what, type(error).__name__, error))
    if changed:
        pytest.fail("%s %s is installed; %s was checked against %s %s and relies on what "
                    "changed:\n  %s" % (dependency, version(dependency), adapter_name, dependency,
                                        adapter.CHECKED_AGAINST[dependency],
                                        "\n  ".join(changed)), pytrace=False)


def parameters(function):
    return list(inspect.signature(function).parameters)


def module_source(name):
    """The Python source of a module (gevent compiles some with Cython; the .py ships too)."""
    package, _, module = name.rpartition(".")
    folder = importlib.util.find_spec(package).submodule_search_locations[0]
    with open(os.path.join(folder, module + ".py"), encoding="utf-8") as file:
        return file.read()


# -- reached only in adapters ----------------------------------------------------------

def greenbridge_module_names():
    names = []
    for directory, _, files in os.walk(os.path.join(REPO, "greenbridge")):
        for file_name in files:
            if file_name.endswith(".py") and file_name != "__main__.py":
                name = os.path.relpath(os.path.join(directory, file_name), REPO)[:-3]
                name = name.replace(os.sep, ".")
                names.append(name[:-len(".__init__")] if name.endswith(".__init__") else name)
    return sorted(names)


def _private(name):
    return name.startswith("_") and not name.startswith("__")


def private_uses_in_source(module_name):
    """`x._name` on anything but self, cls or a class of the module; `from x._y import`."""
    path = importlib.util.find_spec(module_name).origin
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read(), path)
    own_classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            expression = ast.unparse(node)
            if owner not in {"self", "cls"} | own_classes and \
                    expression not in STANDARD_LIBRARY_PRIVATE:
                uses.append("%s:%d %s" % (module_name, node.lineno, expression))
        elif isinstance(node, ast.ImportFrom) and node.module and \
                any(_private(part) for part in node.module.split(".")):
            uses.append("%s:%d from %s import" % (module_name, node.lineno, node.module))
    return uses


def private_overrides(module_name):
    """Names a class of the module redefines that a dependency's base class keeps private."""
    module = importlib.import_module(module_name)
    overrides = []
    for cls in vars(module).values():
        if not inspect.isclass(cls) or cls.__module__ != module_name:
            continue
        # Only what the class body itself defines: a metaclass (abc, enum) adds its own names.
        for name in _defined_in_body(cls):
            if _private(name):
                bases = [base for base in cls.__mro__[1:] if name in vars(base)
                         and not base.__module__.startswith("greenbridge")]
                overrides.extend("%s.%s.%s overrides %s.%s" % (
                    module_name, cls.__name__, name, base.__module__, base.__name__)
                    for base in bases)
    return overrides


def _defined_in_body(cls):
    """The names a class's own source defines (methods, assignments), by its AST."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def test_private_parts_of_dependencies_are_reached_only_in_adapters():
    found = []
    for name in greenbridge_module_names():
        if name not in ADAPTERS:
            found += private_uses_in_source(name) + private_overrides(name)
    assert not found, "outside the adapters (%s):\n%s" % (", ".join(ADAPTERS), "\n".join(found))


@pytest.mark.parametrize("adapter_name", ADAPTERS)
def test_each_adapter_names_the_versions_it_was_checked_against(adapter_name):
    adapter = importlib.import_module(adapter_name)
    for dependency, checked in adapter.CHECKED_AGAINST.items():
        assert version(dependency)  # an installed distribution, by that name
        assert checked in adapter.__doc__, "%s's docstring does not name %s %s" % (
            adapter_name, dependency, checked)


# -- what each adapter relies on ---------------------------------------------------------

def test_gevent_hub_still_waits_as_the_adapter_does():
    from gevent import get_hub, socket

    hub = get_hub()
    left, right = socket.socketpair()
    with left, right:
        watcher = hub.loop.io(right.fileno(), 1)
        assert_still_holds("greenbridge.adapters.gevent_hub", "gevent", [
            ("hub.wait starts the watcher with a switch into the waiting greenlet",
             lambda: "watcher.start(waiter.switch" in module_source("gevent._hub_primitives")),
            ("the hub is a greenlet with switch()", lambda: callable(hub.switch)),
            ("loop.io(fd, 1) watchers start(callback), stop() and close()",
             lambda: all(callable(getattr(watcher, name)) for name in ("start", "stop", "close"))),
            ("a gevent socket waits on its own _read_event/_write_event with _wait(watcher)",
             lambda: parameters(type(right)._wait)[:2] == ["socket", "watcher"]
             and right._read_event.events & 3 == 1 and right._write_event.events & 3 == 2),
        ])
        watcher.close()


def test_gevent_popen_still_hands_the_child_to_execute_child():
    from gevent import subprocess
    from gevent.os import fork_and_watch

    stock = subprocess.Popen(["true"], stdin=subprocess.DEVNULL)
    stock.wait(10)
    popen_source = module_source("gevent.subprocess")
    assert_still_holds("greenbridge.adapters.gevent_popen", "gevent", [
        ("Popen._execute_child's first parameters, passed by position",
         lambda: parameters(subprocess.Popen._execute_child)[:18] == [
             "self", "args", "executable", "preexec_fn", "close_fds", "pass_fds", "cwd", "env",
             "universal_newlines", "startupinfo", "creationflags", "shell", "p2cread",
             "p2cwrite", "c2pread", "c2pwrite", "errread", "errwrite"]),
        ("Popen.__init__ calls self._execute_child and, when it fails, closes the child's "
         "ends unless _closed_child_pipe_fds", lambda: "self._execute_child(" in popen_source
         and "if not self._closed_child_pipe_fds:" in popen_source),
        ("a Popen keeps its loop (with install_sigchld) in _loop",
         lambda: callable(stock._loop.install_sigchld)),
        ("Popen._on_child(watcher) sets returncode and result",
         lambda: parameters(subprocess.Popen._on_child) == ["self", "watcher"]
         and stock.result.get(timeout=0) == 0 == stock.returncode),
        ("a Popen with DEVNULL holds its descriptor in _devnull",
         lambda: isinstance(stock._devnull, int)),
        ("_child_created is set once the child runs", lambda: stock._child_created is True),
        ("fork_and_watch(callback, loop, ref, fork)",
         lambda: parameters(fork_and_watch) == ["callback", "loop", "ref", "fork"]),
    ])


def test_gevent_pywsgi_still_sends_what_the_client_error_hook_returns():
    from gevent.pywsgi import WSGIHandler

    handler_source = inspect.getsource(WSGIHandler.handle_one_request)
    assert_still_holds("greenbridge.adapters.gevent_pywsgi", "gevent", [
        ("WSGIHandler._handle_client_error(ex)",
         lambda: parameters(WSGIHandler._handle_client_error) == ["self", "ex"]),
        ("handle_one_request returns what the hook returns for an error of read_request",
         lambda: "return self._handle_client_error(ex)" in handler_source),
        ("handle() sends that (status, response) and stops",
         lambda: "self.status, response_body = result" in inspect.getsource(WSGIHandler.handle)),
    ])


def test_gevent_websocket_still_has_what_greenbridge_builds_on():
    from gevent.pywsgi import WSGIHandler
    from geventwebsocket.handler import WebSocketHandler
    from geventwebsocket.websocket import Stream, WebSocket

    assert_still_holds("greenbridge.adapters.gevent_websocket", "gevent-websocket", [
        ("WebSocket(environ, stream, handler)",
         lambda: parameters(WebSocket.__init__) == ["self", "environ", "stream", "handler"]),
        ("WebSocket's __slots__ hold environ, closed, stream and handler",
         lambda: {"environ", "closed", "stream", "handler"} <= set(WebSocket.__slots__)),
        ("Stream(handler)", lambda: parameters(Stream.__init__) == ["self", "handler"]),
        ("WebSocketHandler is a pywsgi WSGIHandler that upgrades in run_application",
         lambda: issubclass(WebSocketHandler, WSGIHandler)
         and "self.upgrade_websocket()" in inspect.getsource(WebSocketHandler.run_application)),
        ("run_websocket closes the WebSocket only if it is not marked closed",
         lambda: "if not self.websocket.closed:" in
         inspect.getsource(WebSocketHandler.run_websocket)),
    ])


def test_pyopenssl_still_has_what_openssl_binding_reaches_into():
    from OpenSSL._util import ffi, lib

    from greenbridge.tls.openssl_binding import peer_certificate_verified, set_groups_list

    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    assert_still_holds("greenbridge.tls.openssl_binding", "pyOpenSSL", [
        ("OpenSSL._util.lib has the calls used",
         lambda: all(hasattr(lib, name) for name in (
             "SSL_CTX_set1_curves_list", "SSL_CTX_set_verify", "SSL_get_verify_result",
             "X509_V_OK"))),
        ("Context._context is the SSL_CTX", lambda: ffi.typeof(context._context).cname
         == "SSL_CTX *"),
        ("Connection._ssl is the SSL",
         lambda: ffi.typeof(SSL.Connection(context, None)._ssl).cname == "SSL *"),
        ("set_groups_list takes a known group and refuses an unknown one",
         lambda: set_groups_list(context, ["P-256"])
         and not set_groups_list(SSL.Context(SSL.TLS_SERVER_METHOD), ["no-such-group"])),
        ("a connection with no peer certificate reads as verified (X509_V_OK)",
         lambda: peer_certificate_verified(SSL.Connection(context, None))),
    ])


def test_gunicorn_still_builds_its_gevent_server_from_the_worker_class():
    from gunicorn.workers import ggevent

    assert_still_holds("greenbridge.gunicorn_worker", "gunicorn", [
        ("GeventPyWSGIWorker's server_class and wsgi_handler",
         lambda: ggevent.GeventPyWSGIWorker.server_class is ggevent.PyWSGIServer
         and ggevent.GeventPyWSGIWorker.wsgi_handler is ggevent.PyWSGIHandler),
        ("GeventWorker.run builds server_class(..., handler_class=wsgi_handler, **ssl_args)",
         lambda: all(text in inspect.getsource(ggevent.GeventWorker.run) for text in (
             "self.server_class(", "handler_class=self.wsgi_handler", "**ssl_args"))),
    ])


def test_gevent_server_still_wraps_tls_in_wrap_socket_and_handle():
    from gevent.server import StreamServer

    server_source = inspect.getsource(StreamServer)
    assert_still_holds("greenbridge.gunicorn_worker", "gevent", [
        ("StreamServer.wrap_socket_and_handle(client_socket, address)",
         lambda: parameters(StreamServer.wrap_socket_and_handle)
         == ["self", "client_socket", "address"]),
        ("with TLS options it handles each socket through wrap_socket_and_handle",
         lambda: "self._handle = self.wrap_socket_and_handle" in server_source),
        ("which wraps with self.wrap_socket(client_socket, **self.ssl_args)",
         lambda: "self.wrap_socket(client_socket, **self.ssl_args)" in server_source),
    ])
