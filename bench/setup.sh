#!/bin/bash
# Speed of `dffmpeg setup` on 4 test hosts (network namespaces with their
# own sshd; needs root): a first bring-up of stock Raspberry-Pi-like hosts
# with --ask-pass, a no-op re-run and a `--check --diff` run, each round on
# fresh hosts. Prints a Markdown table (min / median) next to the Ansible
# figures of issue 5. Release build.
#
#   bench/setup.sh                 # 3 rounds x 5 no-op and check runs
#   ROUNDS=5 REPEATS=10 bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then exec sudo -E env "PATH=$PATH" "$0" "$@"; fi
export SETUP_BENCH_ROUNDS=${ROUNDS:-3} SETUP_BENCH_REPEATS=${REPEATS:-5}
cargo test --release --test it setup_bench:: -- --ignored --nocapture --test-threads 1 2>&1 |
  grep -v -e '^running ' -e '^test ' -e '^$' -e '^test result' -e '^ *Finished' -e '^ *Running' -e '^ *Compiling'
