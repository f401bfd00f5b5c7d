#!/bin/bash
# bench/lab.sh — test hosts for the benchmarks (the shell twin of the tests'
# Rust harness, tests/it/common/lab.rs). Each host: a network namespace on a
# bridge of this machine (LAB_NET.0/24, nothing routed out), a private mount
# namespace whose root is an overlay of / (its own /etc, /root, /srv), its own
# sshd and host key, and optionally a CPU quota (cgroup v1 cpu controller),
# visible inside the host as in a container — or, with LAB_QUOTA=hidden, not
# visible at all: the host then sees this machine's cores and nothing says
# it is slow, as on a real Raspberry Pi.
#
#   lab.sh up NAME[:CPUS] ...        start hosts (e.g. n1:1 half:0.5); prints NAME IP
#   lab.sh ip NAME                   a host's address
#   lab.sh exec NAME CMD...          run CMD inside the host (its mounts, network, root)
#   lab.sh share NAME HOSTDIR PATH   bind HOSTDIR of this machine at PATH in the host
#   lab.sh down                      stop every host, remove bridge, namespaces, cgroups
#
# Env: LAB_DIR (/var/tmp/dlab-bench), LAB_BR (br-dlbench), LAB_NET (198.18.50),
# LAB_NS (dlbench: namespace and cgroup prefix), LAB_QUOTA (visible | hidden).
# Needs root, iproute2, util-linux.
set -euo pipefail
DIR=${LAB_DIR:-/var/tmp/dlab-bench}
BR=${LAB_BR:-br-dlbench}
NET=${LAB_NET:-198.18.50}
NS=${LAB_NS:-dlbench}
CPU_CG=/sys/fs/cgroup/cpu
QUOTA=${LAB_QUOTA:-visible}
case $QUOTA in visible | hidden) ;; *) echo "lab.sh: LAB_QUOTA is visible or hidden" >&2; exit 2 ;; esac

die() { echo "lab.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root"
case $NET in 198.18.*) ;; *) die "LAB_NET must be in 198.18.0.0/15 (test addresses only)" ;; esac
H=$DIR/hosts
mkdir -p "$H"

host_dir() { [ -d "$H/$1" ] || die "no host $1"; echo "$H/$1"; }
sshd_pid() { # the host's sshd, which holds its namespaces
  local p
  p=$(cat "$(host_dir "$1")/pid" 2>/dev/null) || die "host $1 is not running"
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = sshd ] || die "host $1 is not running"
  echo "$p"
}

# Mount options of the machine's cgroup v1 hierarchy holding cpu ("cpu" or
# "cpu,cpuacct"), to mount the same hierarchy inside a host.
cpu_cgroup_opts() {
  awk -v mp="$CPU_CG" '{ for (i = 1; $i != "-"; i++) ; if ($5 == mp && $(i+1) == "cgroup") {
    n = split($(i+3), o, ","); s = ""
    for (j = 1; j <= n; j++) if (o[j] != "rw" && o[j] != "ro" && o[j] !~ /=/) s = s (s ? "," : "") o[j]
    print s; exit } }' /proc/self/mountinfo
}

bridge() {
  ip link show "$BR" >/dev/null 2>&1 && return
  ip link add "$BR" type bridge
  ip addr add "$NET.1/24" dev "$BR"
  ip link set "$BR" up
}

up() { # NAME[:CPUS]
  local name=${1%%:*} cpus= n ip cg= opts
  [[ $1 == *:* ]] && cpus=${1#*:}
  [[ $name =~ ^[a-z0-9]{1,8}$ ]] || die "host name $name: 1-8 of a-z 0-9"
  n=$H/$name
  if [ -f "$n/pid" ] && sshd_pid "$name" >/dev/null 2>&1; then echo "$name $(cat "$n/ip")"; return; fi
  mkdir -p "$n"/{upper,work,root}
  if [ ! -f "$n/ip" ]; then
    echo "$NET.$(( $(ls "$H" | wc -l) + 9 ))" >"$n/ip"
  fi
  ip=$(cat "$n/ip")
  bridge
  ip netns add "$NS-$name" 2>/dev/null || true
  if ! ip link show "vb-$name" >/dev/null 2>&1; then
    ip link add "vb-$name" type veth peer name eth0 netns "$NS-$name"
    ip link set "vb-$name" master "$BR" up
    ip -n "$NS-$name" addr add "$ip/24" dev eth0
    ip -n "$NS-$name" link set eth0 up
    ip -n "$NS-$name" link set lo up
  fi
  if [ -n "$cpus" ]; then
    [ -f "$CPU_CG/cpu.cfs_quota_us" ] || die "a CPU quota needs cgroup v1 at $CPU_CG"
    cg=$CPU_CG/$NS-$name
    mkdir -p "$cg"
    echo 100000 >"$cg/cpu.cfs_period_us"
    awk -v c="$cpus" 'BEGIN { printf "%d\n", c * 100000 }' >"$cg/cpu.cfs_quota_us"
  fi
  opts=
  [ "$QUOTA" = hidden ] || opts=$(cpu_cgroup_opts)
  local r=$n/root script
  # `ip netns exec` remounts /sys, hiding the machine's cgroups: mount the cpu
  # hierarchy again inside, so the host sees its quota as a container would
  # (not with LAB_QUOTA=hidden: the quota binds all the same, unseen).
  script="set -e
mount -t overlay overlay -o lowerdir=/,upperdir=$n/upper,workdir=$n/work $r
# root's stock Debian dotfiles, as on a fresh node: this machine's own (a dev
# box's pyenv init and the like) would run in every ssh session of the host.
cp /usr/share/base-files/dot.bashrc $r/root/.bashrc 2>/dev/null || true
cp /usr/share/base-files/dot.profile $r/root/.profile 2>/dev/null || true
mount -t proc proc $r/proc
mount --rbind /dev $r/dev
mount -t sysfs sysfs $r/sys 2>/dev/null || true
${opts:+mount -t tmpfs -o mode=755 tmpfs $r/sys/fs/cgroup && mkdir $r/sys/fs/cgroup/cpu && mount -t cgroup -o $opts cgroup $r/sys/fs/cgroup/cpu || true}
mount -t tmpfs -o mode=755 tmpfs $r/run
mount -t tmpfs -o mode=1777 tmpfs $r/tmp
mkdir -p $r/run/sshd
hostname $name; echo $name >$r/etc/hostname
rm -f $r/etc/ssh/ssh_host_*; chroot $r ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
exec chroot $r /usr/sbin/sshd -D -E /var/log/sshd.log -o ListenAddress=$ip \
  -o HostKey=/etc/ssh/ssh_host_ed25519_key -o PermitRootLogin=prohibit-password \
  -o MaxStartups=100 -o MaxSessions=100"
  (
    [ -z "$cg" ] || echo "$BASHPID" >"$cg/cgroup.procs"
    exec ip netns exec "$NS-$name" unshare --mount --uts --propagation private sh -c "$script"
  ) </dev/null >"$n/start.log" 2>&1 &
  echo $! >"$n/pid"
  local i
  for i in $(seq 100); do
    ip netns exec "$NS-$name" bash -c "exec 3<>/dev/tcp/$ip/22" 2>/dev/null && { echo "$name $ip"; return; }
    kill -0 "$(cat "$n/pid")" 2>/dev/null || break
    sleep 0.1
  done
  die "host $name: sshd did not start ($(tail -3 "$n/start.log" 2>/dev/null | tr '\n' ' '))"
}

kill_tree() {
  local c
  for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c"; done
  kill -9 "$1" 2>/dev/null || true
}

down() {
  local n name
  for n in "$H"/*/; do
    [ -d "$n" ] || continue
    name=$(basename "$n")
    [ -f "$n/pid" ] && kill_tree "$(cat "$n/pid")"
    ip netns del "$NS-$name" 2>/dev/null || true
    ip link del "vb-$name" 2>/dev/null || true
    umount -l "$n/root" 2>/dev/null || true
    for _ in 1 2 3 4 5; do rmdir "$CPU_CG/$NS-$name" 2>/dev/null && break; [ -d "$CPU_CG/$NS-$name" ] || break; sleep 0.2; done
    rm -rf --one-file-system "$n"
  done
  ip link del "$BR" 2>/dev/null || true
}

cmd=${1:-}; [ $# -gt 0 ] && shift
case $cmd in
  up) for h in "$@"; do up "$h"; done ;;
  ip) cat "$(host_dir "$1")/ip" ;;
  exec) name=$1; shift; p=$(sshd_pid "$name")
    nsenter -t "$p" -m -n -u chroot "$(host_dir "$name")/root" "$@" ;;
  share) p=$(sshd_pid "$1"); r=$(host_dir "$1")/root; mkdir -p "$2"
    nsenter -t "$p" -m -- sh -c 'mkdir -p "$1$2" && mount --bind "$3" "$1$2"' share "$r" "$3" "$2" ;;
  down) down ;;
  *) sed -n 2,15p "$0" >&2; exit 2 ;;
esac
