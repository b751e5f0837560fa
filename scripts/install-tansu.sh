#!/usr/bin/env bash
# Installs the tansu 0.6.0 broker from crates.io if it is not installed yet (about 10 minutes
# on 2 cores, once). Without the dynostore and libsql features tansu has no storage engine.
set -euo pipefail
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if [ -x "$cargo_bin/tansu" ] && "$cargo_bin/tansu" --version 2>/dev/null | grep -qx 'tansu 0.6.0'; then
    exit 0
fi
echo "installing tansu 0.6.0 from crates.io (about 10 minutes, once)..." >&2
cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
