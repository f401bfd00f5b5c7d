#!/bin/bash
# Builds dffmpeg for x86_64, aarch64 and armv7 and packs each as a Debian package:
#
#   scripts/dist.sh                  # target/dist/dffmpeg_VERSION_{amd64,arm64,armhf}.deb
#   scripts/dist.sh armhf arm64      # only these
#
#   amd64  x86_64-unknown-linux-gnu        PCs
#   arm64  aarch64-unknown-linux-gnu       64-bit Raspberry Pi OS / Debian arm64 (Pi 3, 4, 5)
#   armhf  armv7-unknown-linux-gnueabihf   32-bit Raspberry Pi OS / Debian armhf (Pi 2, 3, 4;
#                                          not the ARMv6 Pi 1 and Zero)
#
# Each package holds the binary, its man pages and bash/zsh/fish completions
# (generated from the clap definition by running the x86_64 build of the same
# source), the example inventory, the README and the license; Depends: libc6
# (the glibc symbol versions the binary uses: 2.34, so Debian 12 / Raspberry Pi
# OS bookworm or later), libgcc-s1, openssh-client; Recommends: ffmpeg.
# Install with `sudo apt install ./dffmpeg_VERSION_ARCH.deb`; `dpkg -r dffmpeg`
# removes it.
#
# Toolchain: Debian's own rustc-web/cargo-web with libstd-rust-web-dev for each
# target architecture (a rustup toolchain offline cannot fetch other targets),
# and the gcc cross linkers. On Debian 12 this script installs what is missing
# (dpkg --add-architecture arm64/armhf, apt-get) — as root, or through sudo.
#
# Packaging: dpkg-deb --build, Debian's own tool, present on every Debian
# (dpkg is Essential), over a staged tree and a control file written here.
# cargo-deb was the alternative: it would have to be compiled with `cargo
# install` (a few hundred crates, minutes on 2 cores) on every fresh machine
# and CI run, and for cross builds its automatic Depends need dpkg-shlibdeps
# with the target's libc6 in the dpkg database, which a cross machine lacks;
# the control file dffmpeg needs is a dozen lines.
#
# Environment:
#   DIST_OUT=DIR        where the .deb files go (default target/dist)
#   DIST_BUILD=DIR      cargo's target dir for these builds (default target/dist/build;
#                       the tests keep theirs in /var/tmp so that it is reused)
#   DIST_DOCS_BIN=FILE  an x86_64 dffmpeg of this same source to generate the docs with,
#                       so that no x86_64 release build is needed when amd64 is not asked for
#   DIST_MAINTAINER     the control file's Maintainer
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=${DIST_OUT:-$repo/target/dist}
build=${DIST_BUILD:-$repo/target/dist/build}
maintainer=${DIST_MAINTAINER:-dffmpeg developers <dffmpeg@example.invalid>}
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "dist.sh: no version in Cargo.toml" >&2; exit 2; }

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 armhf)
triple() {
  case $1 in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    armhf) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "dist.sh: unknown architecture '$1' (amd64, arm64 or armhf)" >&2; exit 2 ;;
  esac
}
gnu() { case $1 in amd64) echo x86_64-linux-gnu ;; arm64) echo aarch64-linux-gnu ;; armhf) echo arm-linux-gnueabihf ;; esac; }
for a in "${arches[@]}"; do triple "$a" >/dev/null; done
want() { local a; for a in "${arches[@]}"; do [ "$a" = "$1" ] && return 0; done; return 1; }
# The docs come from an x86_64 build: the one packaged, or DIST_DOCS_BIN, or one built for them.
builds=("${arches[@]}")
if ! want amd64 && [ -z "${DIST_DOCS_BIN:-}" ]; then builds=(amd64 "${arches[@]}"); fi

# 1. Toolchain.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
installed() { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null | sed -n 's/^install ok installed //p'; }
pkgs=(rustc-web cargo-web binutils)
for a in "${builds[@]}"; do
  [ "$a" = amd64 ] && pkgs+=(gcc) || pkgs+=("gcc-$(gnu "$a")" "libc6-dev-$a-cross")
done
missing=()
for p in "${pkgs[@]}"; do [ -n "$(installed "$p")" ] || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "dist.sh: installing ${missing[*]}" >&2
  as_root apt-get -o DPkg::Lock::Timeout=600 update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi
# The standard library of each target, the very version of the compiler.
rust=$(installed rustc-web)
missing=()
for a in "${builds[@]}"; do
  [ "$(installed "libstd-rust-web-dev:$a")" = "$rust" ] || missing+=("libstd-rust-web-dev:$a=$rust")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "dist.sh: installing ${missing[*]}" >&2
  for a in "${builds[@]}"; do
    [ "$a" = "$(dpkg --print-architecture)" ] || dpkg --print-foreign-architectures | grep -qx "$a" \
      || as_root dpkg --add-architecture "$a"
  done
  as_root apt-get -o DPkg::Lock::Timeout=600 update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi

# 2. Builds: the release profile (stripped: Cargo.toml), Cargo.lock as committed.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
declare -A secs
for a in "${builds[@]}"; do
  t=$(triple "$a")
  start=$(date +%s.%N)
  echo "dist.sh: building $t" >&2
  linker_var=CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_LINKER
  env -u RUSTFLAGS -u CARGO_BUILD_TARGET RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
    "$linker_var=$(gnu "$a")-gcc" \
    /usr/bin/cargo build --release --locked --bin dffmpeg --target "$t" --target-dir "$build"
  secs[$a]=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
done
bin() { echo "$build/$(triple "$1")/release/dffmpeg"; }

# 3. Docs, generated from the clap definition by the x86_64 build.
docs_bin=${DIST_DOCS_BIN:-$(bin amd64)}
[ "$("$docs_bin" --version)" = "dffmpeg $version" ] \
  || { echo "dist.sh: $docs_bin is not dffmpeg $version" >&2; exit 1; }
docs=$out/.docs
rm -rf "$docs"
mkdir -p "$docs/man" "$docs/completions"
"$docs_bin" manpages "$docs/man"
gzip -9n "$docs"/man/*.1
for sh in bash zsh fish; do "$docs_bin" completions "$sh" >"$docs/completions/$sh"; done

# 4. Packages.
depends() { # from the binary's NEEDED libraries and the newest glibc symbol version it uses
  local f=$1 lib glibc deps=()
  glibc=$(readelf --dyn-syms -W "$f" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
  for lib in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case $lib in
      libc.so.6 | libm.so.6 | libdl.so.2 | libpthread.so.0 | librt.so.1 | ld-linux*) deps+=("libc6 (>= $glibc)") ;;
      libgcc_s.so.1) deps+=("libgcc-s1 (>= 4.2)") ;;
      *) echo "dist.sh: $f needs $lib: add its package to Depends" >&2; exit 1 ;;
    esac
  done
  deps+=(openssh-client)
  printf '%s\n' "${deps[@]}" | awk '!seen[$0]++' | paste -sd, - | sed 's/,/, /g'
}
mkdir -p "$out"
year=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
commit=$(git describe --always --dirty 2>/dev/null || echo "an unversioned tree")
[ "$commit" = "an unversioned tree" ] || commit="commit $commit"
summary=()
for a in "${arches[@]}"; do
  stage=$out/.stage-$a
  rm -rf "$stage"
  install -D -m 755 "$(bin "$a")" "$stage/usr/bin/dffmpeg"
  install -d "$stage/usr/share/man/man1"
  install -m 644 "$docs"/man/*.1.gz "$stage/usr/share/man/man1/"
  install -D -m 644 "$docs/completions/bash" "$stage/usr/share/bash-completion/completions/dffmpeg"
  install -D -m 644 "$docs/completions/zsh" "$stage/usr/share/zsh/vendor-completions/_dffmpeg"
  install -D -m 644 "$docs/completions/fish" "$stage/usr/share/fish/vendor_completions.d/dffmpeg.fish"
  doc=$stage/usr/share/doc/dffmpeg
  install -D -m 644 inventory.example.yaml "$doc/examples/inventory.example.yaml"
  gzip -9n <README.md >"$doc/README.md.gz"
  cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: dffmpeg

Files: *
Copyright: $year the dffmpeg authors
License: GPL-3+

License: GPL-3+
 This program is free software: you can redistribute it and/or modify
 it under the terms of the GNU General Public License as published by
 the Free Software Foundation, either version 3 of the License, or
 (at your option) any later version.
 .
 This program is distributed in the hope that it will be useful,
 but WITHOUT ANY WARRANTY; without even the implied warranty of
 MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
 GNU General Public License for more details.
 .
 On Debian systems, the complete text of the GNU General Public License
 version 3 can be found in "/usr/share/common-licenses/GPL-3".
EOF
  printf 'dffmpeg (%s) unstable; urgency=medium\n\n  * Built by scripts/dist.sh from %s.\n\n -- %s  %s\n' \
    "$version" "$commit" "$maintainer" "$(date -R -u -d "@$SOURCE_DATE_EPOCH")" | gzip -9n >"$doc/changelog.gz"
  chmod 644 "$doc/copyright" "$doc/changelog.gz"
  install -d "$stage/DEBIAN"
  cat >"$stage/DEBIAN/control" <<EOF
Package: dffmpeg
Version: $version
Architecture: $a
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: $(depends "$(bin "$a")")
Recommends: ffmpeg
Section: video
Priority: optional
Description: distributed ffmpeg on a cluster of spare machines
 dffmpeg turns a few spare machines (Raspberry Pis, old PCs) into a video
 transcoding cluster: "dffmpeg setup" brings the machines up over SSH (apt
 sources, ffmpeg, SSH keys, an NFS share), "dffmpeg transcode" splits a
 video into keyframe-aligned chunks, encodes them on every node and merges
 them frame-exactly, with audio, subtitles, chapters and metadata intact.
EOF
  (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
    >"$stage/DEBIAN/md5sums"
  chmod 644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"
  deb=$out/dffmpeg_${version}_$a.deb
  dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
  rm -rf "$stage"
  summary+=("$(printf '%-6s %-32s build %6s s  binary %5d KiB  %s %d KiB' "$a" "$(triple "$a")" \
    "${secs[$a]:-?}" $(($(stat -c %s "$(bin "$a")") / 1024)) "${deb#"$repo"/}" $(($(stat -c %s "$deb") / 1024)))")
done
rm -rf "$docs"
printf '%s\n' "${summary[@]}"
