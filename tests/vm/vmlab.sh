#!/bin/bash
# dffmpeg's VM harness: small Debian bookworm VMs (QEMU; KVM where it works, else TCG) on a
# private bridge, for the tests that need real kernels (kernel NFS server and client).
#
#   vmlab.sh image            build the cached base image if its recipe changed (else no-op),
#                             and unpack qemu (both cached under DFFMPEG_VM_DIR)
#   vmlab.sh up NAME...       boot one VM per name (1 vCPU, 768 MB), wait until sshd answers and
#                             systemd has finished booting; prints NAME IP
#   vmlab.sh ip NAME          its address (198.18.60.11, .12, ... in order of first `up`)
#   vmlab.sh ssh NAME CMD...  run CMD in the VM as root (the harness's own key)
#   vmlab.sh reboot NAME      reboot inside the guest, wait as `up` does on the new boot
#   vmlab.sh down             stop every VM of this harness; remove taps, bridge and overlays
#   vmlab.sh key              path of the harness's private key (root in the VMs)
#
# Network: bridge dffvm-br holds 198.18.60.1/24, one tap dfv-NAME per VM; no NAT, no default
# route in the VMs: they reach each other and 198.18.60.1 only (serve the test apt mirror there).
# Image (tests/vm/README.md): user pi / raspberry (uid 1000, passwordless sudo, no SSH key),
# root by key only, ffmpeg; the NFS packages are NOT installed (their dependencies are).
# Env: DFFMPEG_VM_DIR (/var/tmp/dffmpeg-vm: cache, state, logs), DFFMPEG_VM_ACCEL (kvm|tcg),
# DFFMPEG_VM_TIMEOUT (s to wait for sshd; default 600 under TCG, 120 under KVM). Run as root.
set -euo pipefail
VD=${DFFMPEG_VM_DIR:-/var/tmp/dffmpeg-vm}
BR=dffvm-br
NET=198.18.60
MEM=768
KEY=$VD/id_ed25519
SSH=(ssh -i "$KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
  -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=3 -o ServerAliveInterval=5 -o ServerAliveCountMax=6)
# Packages of the image besides debootstrap's minbase (ffmpeg: the compute side).
IMAGE_PKGS=linux-image-amd64,systemd-sysv,udev,iproute2,iputils-ping,openssh-server,sudo,ffmpeg
# Installed by the test's `dffmpeg setup` from the signed test mirror, never in the image.
NFS_PKGS="nfs-common nfs-kernel-server libnfsidmap1 rpcbind keyutils"
# Modules a VM never needs: fewer udev/modprobe runs at boot (boot time matters under TCG).
NOMOD=modprobe.blacklist=floppy,pcspkr,ata_piix,ata_generic,kvm,kvm_amd,kvm_intel,joydev,evdev,serio_raw,psmouse,\
i2c_piix4,ghash_clmulni_intel,sha512_ssse3,sha256_ssse3,sha1_ssse3,aesni_intel,crct10dif_pclmul,crc32_pclmul,crc32c_intel

T0=$SECONDS
log() { echo "vmlab [$((SECONDS - T0))s] $*" >&2; }
die() { echo "vmlab: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (bridge, taps, debootstrap)"
mkdir -p "$VD/vms"

ip_of() { cat "$VD/vms/$1/ip" 2>/dev/null || die "no VM named $1 (vmlab.sh up $1)"; }

# Lock for what must not run twice at once (image build, qemu unpack, up/down); qemu must
# not inherit it (9>&-), or the lock lives as long as the VM.
lock() { exec 9>"$VD/.lock"; flock 9; }

# KVM unless told tcg; TCG when /dev/kvm is missing or is kvm_pvm (nested PVM runs only
# PVM-built guest kernels: a stock Debian kernel hangs or aborts there).
pick_accel() {
  ACCEL=${DFFMPEG_VM_ACCEL:-kvm}
  if [ "$ACCEL" = kvm ] && { [ ! -w /dev/kvm ] || [ -d /sys/module/kvm_pvm ]; }; then
    ACCEL=tcg; log "no usable KVM (/dev/kvm missing or kvm_pvm): TCG, slow"
  fi
}

apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2; }
# apt-get download/install with lists refreshed once when they are missing or stale.
apt_retry() { "$@" || { apt-get update -q >&2 && "$@"; }; }

# bookworm's qemu-system-x86, unpacked under $VD/qemu and run with -L and QEMU_MODULE_DIR:
# installing it with apt would remove the machine's backports qemu-utils (10.x). Only the
# libraries it needs that the machine lacks are installed (never upgrading installed ones).
qemu_bin() {
  local Q=$VD/qemu libs
  if [ ! -x "$Q/usr/bin/qemu-system-x86_64" ]; then
    log "unpacking bookworm's qemu-system-x86 under $Q"
    rm -rf "$Q" "$Q.tmp" "$VD/debs"; mkdir -p "$VD/debs"
    (cd "$VD/debs" && apt_retry apt-get download -q -o APT::Sandbox::User=root qemu-system-x86 \
      qemu-system-common qemu-system-data seabios >&2)
    libs=$(apt-cache depends qemu-system-x86 | awk '$1=="Depends:" && $2 ~ /^lib/ {print $2}' |
      while read -r l; do dpkg-query -W -f '${db:Status-Status}\n' "$l" 2>/dev/null | grep -qx installed || echo "$l"; done)
    log "libraries to install for qemu: ${libs:-none}"
    # shellcheck disable=SC2086
    [ -z "$libs" ] || apt_retry apt_install $libs
    mkdir -p "$Q.tmp" && for d in "$VD"/debs/*.deb; do dpkg-deb -x "$d" "$Q.tmp"; done && mv "$Q.tmp" "$Q"
    rm -rf "$VD/debs"
  fi
  QEMU=$Q/usr/bin/qemu-system-x86_64
  QDATA=$Q/usr/share
  export QEMU_MODULE_DIR=$Q/usr/lib/x86_64-linux-gnu/qemu
  "$QEMU" --version >/dev/null || die "$QEMU does not run (missing libraries?)"
}

host_tools() {
  command -v debootstrap >/dev/null || apt_retry apt_install debootstrap
  command -v qemu-img >/dev/null || apt_retry apt_install qemu-utils
  command -v mkfs.ext4 >/dev/null || apt_retry apt_install e2fsprogs
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C dffmpeg-vm-harness -f "$KEY"
}

# ---------------------------------------------------------------------------------------------
# The image recipe: build_rootfs ROOTFS MIRROR. Its text (with IMAGE_PKGS, NFS_PKGS and the
# harness's public key) is hashed; the cached image is rebuilt whenever that hash changes.
build_rootfs() {
  local R=$1 mirror=$2
  debootstrap --variant=minbase --include="$IMAGE_PKGS" bookworm "$R" "$mirror"
  # The NFS packages' dependencies (not the packages): the test mirror holds only the NFS
  # packages plus what the machine itself lacks, so the image must have the rest.
  # Resolved against the machine's Debian suites (bookworm, -updates, -security).
  cp /etc/resolv.conf "$R/etc/resolv.conf"
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' |
    awk '$2 ~ /^bookworm(-updates|-security)?$/ {print "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] " $1 " " $2 " main"}' |
    sort -u > "$R/etc/apt/sources.list"
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
  chroot "$R" apt-get update -q
  local deps
  # shellcheck disable=SC2086
  deps=$(chroot "$R" apt-get -s install $NFS_PKGS | awk '/^Inst /{print $2}' | grep -vxF "${NFS_PKGS// /$'\n'}" || true)
  echo "NFS dependencies put in the image: $deps"
  # shellcheck disable=SC2086
  [ -z "$deps" ] || DEBIAN_FRONTEND=noninteractive chroot "$R" apt-get install -y -q $deps
  for p in $NFS_PKGS; do ! chroot "$R" dpkg -s "$p" >/dev/null 2>&1 || { echo "$p got installed"; return 1; }; done
  chroot "$R" apt-get clean
  rm -f "$R/usr/sbin/policy-rc.d" "$R/etc/resolv.conf"
  find "$R/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -delete
  # As after a stock install: sources on the public mirror (unreachable from the VMs).
  printf 'deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
    > "$R/etc/apt/sources.list"

  # Users: pi / raspberry (uid 1000) with passwordless sudo, like Raspberry Pi OS; no SSH key.
  chroot "$R" useradd -m -u 1000 -s /bin/bash -G sudo pi
  echo 'pi:raspberry' | chroot "$R" chpasswd
  echo 'pi ALL=(ALL) NOPASSWD: ALL' > "$R/etc/sudoers.d/010_pi-nopasswd"
  chmod 440 "$R/etc/sudoers.d/010_pi-nopasswd"
  # root: the harness's key only (test control), no password.
  mkdir -p "$R/root/.ssh"; chmod 700 "$R/root/.ssh"; cp "$KEY.pub" "$R/root/.ssh/authorized_keys"
  printf 'HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication yes\nPermitRootLogin prohibit-password\n' \
    > "$R/etc/ssh/sshd_config.d/dffmpeg-vm.conf"
  rm -f "$R"/etc/ssh/ssh_host_*   # made per VM at first boot (ed25519 only: fast)

  # No fsck pass: systemd would wait for udev to announce /dev/vda (~20 s under TCG).
  echo "/dev/vda / ext4 defaults 0 0" > "$R/etc/fstab"
  echo dffvm > "$R/etc/hostname"; : > "$R/etc/machine-id"
  # NFSv4 grace and lease 10 s (kernel minimum) instead of 90 s: a freshly (re)started server
  # serves opens quickly. nfs.conf.d, not nfs.conf: that one is nfs-common's conffile.
  mkdir -p "$R/etc/nfs.conf.d"
  printf '# dffmpeg VM harness: short NFSv4 grace period for tests\n[nfsd]\ngrace-time=10\nlease-time=10\n' \
    > "$R/etc/nfs.conf.d/dffmpeg-vm.conf"

  # Boot time: small initrd (only what mounts the root), fewer units.
  printf 'virtio_pci\nvirtio_blk\ncrc32c_generic\next4\n' >> "$R/etc/initramfs-tools/modules"
  sed -i 's/^MODULES=.*/MODULES=list/' "$R/etc/initramfs-tools/initramfs.conf"
  local u
  for u in e2scrub_reap.service getty-static.service getty@tty1.service serial-getty@ttyS0.service \
    systemd-binfmt.service proc-sys-fs-binfmt_misc.automount apt-daily.timer apt-daily-upgrade.timer \
    dpkg-db-backup.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$R/etc/systemd/system/$u"
  done

  # Per-VM address and host name from the kernel command line (dffvm.ip=A.B.C.D/24,
  # systemd.hostname=NAME); per-VM ssh host key. It loads the NIC driver itself instead of
  # waiting for udev's coldplug to announce eth0 (that comes ~10 s later under TCG).
  cat > "$R/usr/local/sbin/dffvm-net" <<'EOF'
#!/bin/sh
set -e
modprobe virtio_net 2>/dev/null || true
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
ip addr replace "$(sed -n 's/.*dffvm\.ip=\([^ ]*\).*/\1/p' /proc/cmdline)" dev eth0
ip link set eth0 up
hostname > /etc/hostname
grep -qw "$(hostname)" /etc/hosts || echo "127.0.1.1 $(hostname)" >> /etc/hosts
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
EOF
  chmod +x "$R/usr/local/sbin/dffvm-net"
  cat > "$R/etc/systemd/system/dffvm-net.service" <<'EOF'
[Unit]
Description=dffmpeg VM harness: static address from the kernel command line
Before=network.target network-online.target ssh.service rpcbind.service nfs-server.service
Wants=network.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/dffvm-net
[Install]
WantedBy=multi-user.target network-online.target
EOF
  chroot "$R" systemctl enable dffvm-net.service
  chroot "$R" update-initramfs -u -k all
}
# ---------------------------------------------------------------------------------------------

recipe_hash() {
  { declare -f build_rootfs; echo "$IMAGE_PKGS|$NFS_PKGS"; cat "$KEY.pub"; } | sha256sum | cut -c1-16
}

# Removes a build dir, first unmounting what a killed debootstrap left mounted in it.
rm_build() {
  # (grep finding nothing is the normal case: not an error under pipefail)
  { findmnt -rn -o TARGET | grep -F "$1/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$1"
}

image() {
  host_tools
  local I=$VD/image want
  want=$(recipe_hash)
  if [ "$(cat "$I/recipe" 2>/dev/null)" = "$want" ]; then log "image: cached ($I, recipe $want)"; return; fi
  lock
  if [ "$(cat "$I/recipe" 2>/dev/null)" = "$want" ]; then log "image: cached ($I, recipe $want)"; return; fi
  local mirror B=$VD/image.tmp t=$SECONDS
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' | awk '$2=="bookworm"{print $1; exit}')
  [ -n "$mirror" ] || { apt-get update -q >&2
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' | awk '$2=="bookworm"{print $1; exit}'); }
  [ -n "$mirror" ] || die "no bookworm suite in the machine's apt sources"
  log "image: building (recipe $want) from $mirror; log: $VD/build.log"
  rm_build "$B"; mkdir -p "$B"
  # In the background so that set -e holds inside (it is off in an `if` condition).
  build_rootfs "$B/rootfs" "$mirror" > "$VD/build.log" 2>&1 &
  if ! wait $!; then
    tail -40 "$VD/build.log" >&2; rm_build "$B"; die "image build failed; log: $VD/build.log"
  fi
  local R=$B/rootfs
  cp "$(ls "$R"/boot/vmlinuz-* | tail -1)" "$B/vmlinuz"; cp "$(ls "$R"/boot/initrd.img-* | tail -1)" "$B/initrd.img"
  # Root file system without mounting anything: a sparse 4 GB ext4 file.
  mkfs.ext4 -q -F -L dffvm -E root_owner=0:0 -d "$R" "$B/base.raw" 4G >/dev/null
  rm -rf "$R"; echo "$want" > "$B/recipe"
  rm -rf "$I"; mv "$B" "$I"
  log "image: built in $((SECONDS - t))s ($(du -sh --apparent-size "$I/base.raw" | cut -f1) sparse, $(du -sh "$I/base.raw" | cut -f1) used)"
}

up_one() {
  local name=$1 N=$VD/vms/$1 i=11 ip accel
  [[ $name =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "bad VM name $name (1-10 of [a-z0-9], a letter first)"
  [ -f "$N/pid" ] && kill -0 "$(cat "$N/pid")" 2>/dev/null && { log "$name: already up"; return; }
  mkdir -p "$N"
  if [ ! -f "$N/ip" ]; then
    while grep -qx "$NET.$i" "$VD"/vms/*/ip 2>/dev/null; do i=$((i + 1)); done
    echo "$NET.$i" > "$N/ip"
  fi
  ip=$(cat "$N/ip"); i=${ip##*.}
  ip link show "dfv-$name" >/dev/null 2>&1 || {
    ip tuntap add dev "dfv-$name" mode tap; ip link set "dfv-$name" master "$BR" up; }
  rm -f "$N/disk.qcow2"
  qemu-img create -q -f qcow2 -b "$VD/image/base.raw" -F raw "$N/disk.qcow2"
  if [ "$ACCEL" = kvm ]; then accel=(-accel kvm -cpu host); else accel=(-accel "tcg,thread=multi" -cpu max); fi
  : > "$N/console.log"
  "$QEMU" -name "dffvm-$name" "${accel[@]}" -m "$MEM" -smp 1 -nodefaults -no-user-config -display none \
    -L "$QDATA/qemu" -L "$QDATA/seabios" -serial "file:$N/console.log" \
    -kernel "$VD/image/vmlinuz" -initrd "$VD/image/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 quiet mitigations=off net.ifnames=0 $NOMOD systemd.hostname=$name dffvm.ip=$ip/24" \
    -drive "file=$N/disk.qcow2,if=virtio,format=qcow2,cache=unsafe" \
    -netdev "tap,id=n0,ifname=dfv-$name,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,mac=52:54:00:12:60:$(printf %02x "$i"),romfile=" \
    -daemonize -pidfile "$N/pid" 9>&- || die "qemu failed to start $name (console: $N/console.log)"
  date +%s > "$N/started"
}

# wait_ssh NAME [OLD_BOOT_ID]: until root ssh works (on a boot other than OLD_BOOT_ID).
wait_ssh() {
  local name=$1 old=${2:-} ip t0=$SECONDS limit boot
  ip=$(ip_of "$name")
  limit=${DFFMPEG_VM_TIMEOUT:-$([ "$ACCEL" = kvm ] && echo 120 || echo 600)}
  while :; do
    boot=$("${SSH[@]}" "root@$ip" cat /proc/sys/kernel/random/boot_id 2>/dev/null) && [ "$boot" != "$old" ] && break
    if [ $((SECONDS - t0)) -ge "$limit" ]; then
      tail -30 "$VD/vms/$name/console.log" >&2
      die "$name ($ip): no ssh after ${limit}s; console log: $VD/vms/$name/console.log"
    fi
    kill -0 "$(cat "$VD/vms/$name/pid")" 2>/dev/null || {
      tail -30 "$VD/vms/$name/console.log" >&2; die "$name: qemu exited"; }
    sleep 1
  done
  # sshd answers before the boot is over (e.g. fstab NFS mounts): wait for systemd to finish.
  "${SSH[@]}" "root@$ip" "timeout $limit systemctl is-system-running --wait >/dev/null" || true
}

write_hosts() {
  local hosts d
  hosts=$(printf '127.0.0.1 localhost\n%s gateway\n' "$NET.1"
    for d in "$VD"/vms/*/; do [ -f "$d/ip" ] && echo "$(cat "$d/ip") $(basename "$d")"; done)
  for d in "$VD"/vms/*/; do
    [ -f "$d/pid" ] && "${SSH[@]}" "root@$(cat "$d/ip")" "cat > /etc/hosts" <<< "$hosts" || true
  done
}

bridge_up() {
  if ! ip link show "$BR" >/dev/null 2>&1; then
    # The subnet must be ours alone on this machine.
    ! ip -o -4 addr show to "$NET.0/24" | grep -q . || die "$NET.0/24 is already in use: $(ip -o -4 addr show to "$NET.0/24")"
    ip link add "$BR" type bridge
    ip addr add "$NET.1/24" dev "$BR"
    ip link set "$BR" up
  fi
}

down() {
  local N name pid p cmd
  for N in "$VD"/vms/*/; do
    [ -d "$N" ] || continue; name=$(basename "$N")
    if [ -f "$N/pid" ] && pid=$(cat "$N/pid") && grep -qa "dffvm-$name" "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$N"
  done
  # qemu processes of this harness whose state dir was lost (an earlier crashed run).
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null < "$p/cmdline") || continue
    case $cmd in *qemu-system-x86_64\ -name\ dffvm-*"$VD/"*) kill -9 "${p#/proc/}" 2>/dev/null || true ;; esac
  done
  for p in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep '^dfv-' || true); do
    ip link del "$p" 2>/dev/null || true
  done
  ip link del "$BR" 2>/dev/null || true
}

case "${1:-}" in
  image) image; qemu_bin ;;
  up)
    shift; [ $# -gt 0 ] || die "usage: vmlab.sh up NAME..."
    image; lock; pick_accel; qemu_bin; bridge_up
    for n in "$@"; do up_one "$n"; done
    t=$SECONDS; for n in "$@"; do wait_ssh "$n"; log "$n: sshd up ($(ip_of "$n"))"; done
    write_hosts
    log "up: $* booted in $((SECONDS - t))s ($ACCEL)"
    for n in "$@"; do echo "$n $(ip_of "$n")"; done ;;
  ip) [ $# -eq 2 ] || die "usage: vmlab.sh ip NAME"; ip_of "$2" ;;
  ssh) [ $# -ge 3 ] || die "usage: vmlab.sh ssh NAME CMD..."; ip=$(ip_of "$2"); shift 2; exec "${SSH[@]}" "root@$ip" "$@" ;;
  reboot)
    [ $# -eq 2 ] || die "usage: vmlab.sh reboot NAME"
    pick_accel 2>/dev/null; ip=$(ip_of "$2")
    old=$("${SSH[@]}" "root@$ip" cat /proc/sys/kernel/random/boot_id) || die "$2: not reachable before reboot"
    "${SSH[@]}" "root@$ip" 'systemctl reboot 2>/dev/null || reboot' || true
    wait_ssh "$2" "$old"
    log "$2: rebooted" ;;
  down) lock; down; log "down: no VM, tap or bridge left" ;;
  key) echo "$KEY" ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
