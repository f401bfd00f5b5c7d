#!/bin/bash
# The whole test suite. Needs root: test hosts are network namespaces with
# their own sshd. Installs the system packages the tests use when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E env "PATH=$PATH" "$0" "$@"; fi
missing=()
while read -r pkg; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < scripts/packages.txt
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
