"""The origin check (origin.py, settings/origins.py) on its own: Origin headers in, 403 or not.

What must pass is the README's "Browser safety: origins", read directly; test_routes.py
keeps an allowed and a refused origin through a real server, and --same-origin there.
"""

import pytest

from greenbridge.origin import OriginPolicy
from greenbridge.upgrade import Rejected

README_PATTERNS = ["*.example.com", "http://localhost:3000"]
HOST = "127.0.0.1:8080"  # the Host header of the requests below, unless said otherwise


def allowed(policy, origin, addressed_host=HOST, addressed_scheme=None):
    """True when the policy lets `origin` through; False when it refuses it with 403."""
    try:
        policy.check(origin, addressed_host, addressed_scheme)
    except Rejected as refusal:
        assert (refusal.status, refusal.kind) == ("403 Forbidden", "origin")
        assert refusal.reason == "origin %r not allowed" % origin[:200]
        return False
    return True


@pytest.mark.parametrize("origin,expected", [
    ("https://app.example.com", True),
    ("https://deep.app.example.com", True),
    ("http://app.example.com", True),          # a host pattern takes any scheme
    ("HTTPS://App.Example.COM", True),         # schemes and hosts are not case-sensitive
    ("https://app.example.com:443", True),     # the default port written out
    ("https://example.com", False),            # *.example.com means subdomains only
    ("https://app.example.com:8443", False),   # a non-default port must be listed
    ("https://evil.com", False),
    ("https://app.example.com.evil.com", False),
    ("https://evilexample.com", False),
    ("http://localhost:3000", True),
    ("http://localhost:3001", False),
    ("https://localhost:3000", False),         # an exact origin names its scheme
    ("http://localhost", False),
    ("null", False),                           # sandboxed pages, file:// pages
    ("", False),
    ("https://app.example.com/path", False),   # not an origin
    ("https://app.example.com:99999", False),
])
def test_allow_origin_patterns(origin, expected):
    assert allowed(OriginPolicy(README_PATTERNS, same_origin=False), origin) is expected


def test_a_scheme_in_a_host_pattern_is_enforced():
    policy = OriginPolicy(["https://*.example.com"], same_origin=False)
    assert allowed(policy, "https://a.example.com")
    assert not allowed(policy, "http://a.example.com")


def test_requests_without_origin_pass_and_no_policy_passes_everything():
    assert allowed(OriginPolicy(["https://only.example"], same_origin=False), None)
    assert allowed(OriginPolicy([], same_origin=True), None)
    assert not OriginPolicy([], same_origin=False).enabled
    assert allowed(OriginPolicy([], same_origin=False), "https://evil.com")


@pytest.mark.parametrize("origin,addressed_host,addressed_scheme,expected", [
    ("http://127.0.0.1:8080", "127.0.0.1:8080", None, True),
    ("http://127.0.0.1:1", "127.0.0.1:8080", None, False),
    ("https://elsewhere.example", "127.0.0.1:8080", None, False),
    ("https://app.example.com", "app.example.com", None, True),     # 443 on both sides
    ("http://app.example.com", "app.example.com", None, True),      # 80 on both sides
    ("https://app.example.com", "APP.example.com:443", None, True),
    ("https://app.example.com:8443", "app.example.com", None, False),
    ("http://[::1]:8080", "[::1]:8080", None, True),
    ("http://[::1]:8080", "[::1]:8081", None, False),
    # Behind a trusted proxy, X-Forwarded-Proto must be the page's scheme (wss: https).
    ("https://app.example.com", "app.example.com", "https", True),
    ("https://app.example.com", "app.example.com", "wss", True),
    ("http://app.example.com", "app.example.com", "ws", True),
    ("http://app.example.com:443", "app.example.com:443", "https", False),
    ("https://app.example.com", "app.example.com", "http", False),
    ("http://127.0.0.1:8080", "", None, False),                     # no Host header
    ("http://127.0.0.1:8080", "127.0.0.1:port", None, False),
])
def test_same_origin_compares_the_origin_with_the_addressed_host(origin, addressed_host,
                                                                 addressed_scheme, expected):
    policy = OriginPolicy([], same_origin=True)
    assert allowed(policy, origin, addressed_host, addressed_scheme) is expected


def test_same_origin_and_patterns_together_allow_either():
    policy = OriginPolicy(["https://app.example.com"], same_origin=True)
    assert allowed(policy, "https://app.example.com", "127.0.0.1:8080")
    assert allowed(policy, "http://127.0.0.1:8080", "127.0.0.1:8080")
    assert not allowed(policy, "https://evil.com", "127.0.0.1:8080")
