#!/bin/bash
# The whole test suite. Needs root: test hosts are network namespaces with
# their own sshd; the VM test boots QEMU VMs. Installs the system packages the tests use
# when missing (the VM harness installs its own: debootstrap, qemu).
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
# The scripts that run on nodes (embedded in the binary with include_str!)
# strictly, as POSIX sh; the project's own scripts at warning level.
find src -name '*.sh' -print0 | xargs -0 shellcheck -s sh
shellcheck -S warning scripts/*.sh tests/*/*.sh
# The fast tests (the VM tests skip themselves here), then the VM test alone: it boots
# QEMU VMs (TCG: CPU-bound) and must not share the 2 cores with other tests.
# DFFMPEG_VM_TESTS=0 leaves it out (about 10-15 min, image build included).
DFFMPEG_VM_TESTS='' cargo test --all-targets
if [ "${DFFMPEG_VM_TESTS:-1}" = 1 ]; then
  DFFMPEG_VM_TESTS=1 cargo test --test it vm_cluster:: -- --nocapture
fi
