#!/usr/bin/env bash
# Set up greenbridge on a Debian machine with Python 3:
#   scripts/setup.sh          Debian packages it runs with (php-cli) + .venv with greenbridge
#   scripts/setup.sh --test   the same, plus what the test suite needs
#   scripts/setup.sh --bench  the same, plus what scripts/bench.py needs (websocketd, pushpin,
#                             picows)
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# What greenbridge runs with, and what the test suite adds (real servers and clients).
debian_packages=(php-cli)
# pebble, bind9 (named) and bind9-dnsutils (dig): the ACME tests' CA and DNS servers;
# composer: the README's Composer recipe, run by tests/test_composer.py; php-curl:
# phpcent (tests/php/vendor/phpcent), run by tests/test_chat_example.py; curl: the
# README's API example; openssl: s_client, the TLS tests' second client; redis-server:
# the Redis the several-node tests start.
debian_test_packages=(procps nginx pebble bind9 bind9-dnsutils chromium chromium-driver composer
                      php-curl curl openssl redis-server)
python_extras=""
case "${1:-}" in
    --test)
        debian_packages+=("${debian_test_packages[@]}")
        python_extras="[test]" ;;
    --bench)
        # websocketd and pushpin: the reference servers bench.py runs side by side.
        debian_packages+=(websocketd pushpin)
        python_extras="[bench]" ;;
    "") ;;
    *) echo "usage: scripts/setup.sh [--test | --bench]" >&2; exit 2 ;;
esac

missing=()
for package in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    # Wait for a dpkg lock held by another install instead of failing.
    $sudo_cmd apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get -o DPkg::Lock::Timeout=600 \
        install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
echo "setup: installing greenbridge into .venv"
if ! .venv/bin/python -m pip install --disable-pip-version-check -e ".${python_extras}" \
        > .venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log
    echo "setup: pip install failed (log above)" >&2
    exit 1
fi
echo "setup: done (greenbridge $(.venv/bin/greenbridge --version | cut -d' ' -f2))"
