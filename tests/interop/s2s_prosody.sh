#!/bin/sh
# Federation interop with Prosody (issue 6): starts Prosody 0.12 on 127.0.0.2 (prosody.test)
# and Herald on 127.0.0.3 (herald.test), each with its own config, and checks messages and a
# presence subscription both ways, once with Server Dialback (self-signed certificates) and
# once with certificates from a test CA (SASL EXTERNAL both ways, no dialback). Then OMEMO
# across the federation (issue 15, tests/interop/prosody_omemo.py): slixmpp-omemo users on
# `herald serve` and on a Prosody with mod_pep exchange an encrypted message both ways.
# Needs: apt-get install -y prosody lua-unbound (without lua-unbound Prosody ignores the hosts
# file below and asks DNS), and python3 ($PYTHON) with tests/interop/requirements.txt. Prosody
# finds herald.test through its own hosts file (the `unbound.hoststxt` option), so /etc/hosts
# is left alone. Ports 5269 on both addresses must be free.
set -eu
cd "$(dirname "$0")/../.."
command -v prosody >/dev/null || { echo "prosody is not installed (apt-get install -y prosody)" >&2; exit 1; }
status=0
cargo test -p herald-server --test s2s -- --ignored --test-threads 1 prosody_ "$@" || status=1
# After the Rust tests, not beside them: the same fixed addresses and ports.
cargo build -p herald
HERALD_BIN="${HERALD_BIN:-${CARGO_TARGET_DIR:-target}/debug/herald}" "${PYTHON:-python3}" tests/interop/prosody_omemo.py || status=1
exit "$status"
