#!/bin/bash
# A Debian bookworm userland for ARCH (arm64 or armhf) with Debian's own ARM
# ffmpeg, sshd and NFS tools, run on this x86 machine through qemu-user and
# binfmt_misc. Built once (debootstrap --foreign, then its second stage under
# qemu; about 7 min per architecture) and cached in /var/tmp/dffmpeg-armroot/ARCH;
# rebuilt when the package list below changes. Prints the root's path.
#   tests/arm/armroot.sh arm64|armhf
set -euo pipefail
arch=${1:?usage: armroot.sh arm64|armhf}
case $arch in arm64) qemu=aarch64 ;; armhf) qemu=arm ;; *) echo "armroot.sh: unknown arch $arch" >&2; exit 2 ;; esac
pkgs=ffmpeg,openssh-server,openssh-client,iproute2,procps,sudo,nfs-common,nfs-kernel-server,ca-certificates
base=${DFFMPEG_ARMROOT_DIR:-/var/tmp/dffmpeg-armroot}
root=$base/$arch
stamp="bookworm $arch $pkgs"

# binfmt_misc: foreign binaries run through qemu-user-static (fix-binary, so
# they also run inside chroots and namespaces), with their own credentials
# (flag C): a setuid binary such as sudo gets root as on a real machine; with
# Debian's default registration (flags PF) qemu runs as the calling user and
# sudo fails with "effective uid is not 0".
binfmt() {
  local f=/proc/sys/fs/binfmt_misc/qemu-$qemu
  # Two roots may be built at once: the other one may have mounted it meanwhile.
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
    || [ -e /proc/sys/fs/binfmt_misc/register ] || { echo "armroot.sh: cannot mount binfmt_misc" >&2; exit 1; }
  [ -e "$f" ] || update-binfmts --enable "qemu-$qemu" >/dev/null 2>&1 || true
  [ -e "$f" ] || { echo "armroot.sh: binfmt_misc has no qemu-$qemu" >&2; exit 1; }
  if ! grep -q '^flags: .*C' "$f"; then
    local interp magic mask
    interp=$(sed -n 's/^interpreter //p' "$f")
    magic=$(sed -n 's/^magic //p' "$f" | sed 's/../\\x&/g')
    mask=$(sed -n 's/^mask //p' "$f" | sed 's/../\\x&/g')
    echo -1 >"$f"
    printf ':qemu-%s:M::%s:%s:%s:PCF\n' "$qemu" "$magic" "$mask" "$interp" >/proc/sys/fs/binfmt_misc/register
    grep -q '^flags: .*C' "$f" || { echo "armroot.sh: cannot register qemu-$qemu with flag C" >&2; exit 1; }
  fi
}

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
dpkg -s qemu-user-static binfmt-support >/dev/null 2>&1 || need+=(qemu-user-static binfmt-support)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
binfmt
if [ -f "$root/.dffmpeg-complete" ] && [ "$(cat "$root/.dffmpeg-complete")" = "$stamp" ]; then
  echo "$root"; exit 0
fi

# This machine's own Debian mirror.
mirror=$(grep -hoE "^(URIs: *|deb +)[^ ]+" /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | grep -v security | head -n 1 | awk '{print $NF}' || true)
mirror=${mirror:-http://deb.debian.org/debian}
log=$base/$arch.log
mkdir -p "$base"
rm -rf "$root"
mkdir -p "$root"
echo "armroot.sh: building the $arch root in $root (log: $log)" >&2
debootstrap --foreign --arch="$arch" --variant=minbase --include="$pkgs" bookworm "$root" "$mirror" >"$log" 2>&1 \
  || { tail -n 20 "$log" >&2; exit 1; }
# No services start inside the root while packages are configured.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
chroot "$root" /debootstrap/debootstrap --second-stage >>"$log" 2>&1 || { tail -n 20 "$log" >&2; exit 1; }
chroot "$root" /usr/bin/ffmpeg -hide_banner -version >/dev/null
rm -f "$root"/etc/ssh/ssh_host_*
echo "$stamp" >"$root/.dffmpeg-complete"
echo "$root"
