#!/bin/bash
# bench/slurm.sh — issue 23: the same clip through `engine: ssh` (dffmpeg's
# own queue) and `engine: slurm` (every chunk attempt an `srun`) on the same
# test hosts, and the per-chunk overhead Slurm adds.
#
#   cargo build --release
#   bench/slurm.sh                # 60 s clip, 3 repetitions per engine
#   QUICK=1 bench/slurm.sh        # 20 s clip, 1 repetition: about 2 minutes
#
# Needs root (namespaces, mounts, cgroups), ffmpeg, ffprobe, ssh, sshd,
# iproute2, util-linux and Debian's Slurm: apt-get install slurmctld slurmd
# slurm-client munge. Hosts from bench/lab.sh with hidden CPU quotas (they
# see this machine's cores, as a Pi's do not tell its speed): n1 and n2 with
# NODE_CPU (1.0) CPU each, one shared directory of this machine bound into
# both at the same path. Slurm as in the tests (tests/it/common/slurm.rs):
# slurmctld and a munged with its own key and socket on this machine,
# listening on the lab's bridge only for the hosts, slurmd in each host put
# into the host's CPU quota (so are the jobs it starts), declared with
# NODE_CPU CPUs (rounded, at least 1). Everything is removed at exit.
#
# Measured, per engine, REPS times, the order alternating:
#   wall       dffmpeg transcode -I INVENTORY --json --fresh (speed memory cleared)
#   efficiency baseline ÷ (wall × CPUs of the hosts); baseline = one plain
#              ffmpeg on n1 (1 host's CPU), before and after
#   slots      dffmpeg's slots (batch_start): over SSH it counts the cores a
#              host shows (the hidden quota does not show), on Slurm the CPUs
#              slurm.conf declares
#   queue      from Slurm's job records (jobcomp): dffmpeg's jobs, and the
#              longest wait from submission to start (1 s resolution)
#   empty job  median of PROBES runs of `srun -w n1 true` (submission to its
#              end) against `ssh n1 true` over a live multiplexed connection
#              (what dffmpeg's SSH engine pays per chunk to start a process):
#              the difference is what Slurm adds per chunk.
#
# Environment:
#   QUICK=1         DURATION=20 REPS=1 PROBES=5
#   DURATION=60 REPS=3 PROBES=20 NODE_CPU=1
#   ARGS="-c:v libx264 -preset veryfast -crf 23 -c:a aac"
#   CHUNK=          pass --chunk CHUNK to dffmpeg (default: its own choice)
#   WORK=/var/tmp/dffmpeg-bench-slurm   clip, shared dir, results
#   LAB_DIR=/var/tmp/dlab-slbench LAB_BR=br-dlslb LAB_NET=198.18.52 LAB_NS=dlslb
#   SLURM_PORT=17500  slurmctld's port (slurmd: the next one)
#   IDLE_WAIT=30    seconds to wait for a quiet machine before each run
#   REPORT_ONLY=1   no runs: the table again from $WORK's last results
set -uo pipefail
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
[ "$(id -u)" = 0 ] || die "needs root (namespaces, cgroups): sudo $0"
need ffmpeg ffprobe ssh sshd ip nsenter unshare slurmctld slurmd srun munged
find_dffmpeg

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then DURATION=${DURATION:-20}; REPS=${REPS:-1}; PROBES=${PROBES:-5}; fi
DURATION=${DURATION:-60} REPS=${REPS:-3} PROBES=${PROBES:-20} NODE_CPU=${NODE_CPU:-1}
ARGS=${ARGS:-"-c:v libx264 -preset veryfast -crf 23 -c:a aac"}
IDLE_WAIT=${IDLE_WAIT:-30}
SLURM_PORT=${SLURM_PORT:-17500}
export LAB_DIR=${LAB_DIR:-/var/tmp/dlab-slbench} LAB_BR=${LAB_BR:-br-dlslb}
export LAB_NET=${LAB_NET:-198.18.52} LAB_NS=${LAB_NS:-dlslb} LAB_QUOTA=hidden
LAB_SH=${LAB_SH:-$BENCH_DIR/lab.sh}
WORK=${WORK:-/var/tmp/dffmpeg-bench-slurm}
SHARED=$WORK/shared
KEY=$WORK/id_ed25519
export DFFMPEG_KNOWN_HOSTS=$WORK/known_hosts XDG_STATE_HOME=$WORK/state
export SLURM_CONF=$WORK/slurm/slurm.conf
RUN_LOG=$WORK/runs.log
TSV=$WORK/slurm.tsv
HOSTS=(n1 n2)
declare -A IP
SLURM_CPUS=$(awk -v c="$NODE_CPU" 'BEGIN{n=int(c+0.5); print (n<1 ? 1 : n)}')
CPUS=$(awk -v c="$NODE_CPU" -v n="${#HOSTS[@]}" 'BEGIN{print c*n}')
PIDS=()

teardown() {
  local p h
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  # What runs in the hosts (slurmd, jobs: not children of their sshd), then the hosts.
  for h in "${HOSTS[@]}"; do
    for p in $(ip netns pids "$LAB_NS-$h" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  done
  "$LAB_SH" down >/dev/null 2>&1 || true
  p=$(cat "$WORK/slurm/munge-private/pid" 2>/dev/null) && kill "$p" 2>/dev/null
  p=$(cat "$WORK/slurm/slurmctld.pid" 2>/dev/null) && kill "$p" 2>/dev/null
  return 0
}
trap teardown EXIT

# ---- hosts, munge, Slurm ---------------------------------------------------
setup_lab() {
  teardown
  rm -rf "$WORK/slurm" "$WORK/state" "$DFFMPEG_KNOWN_HOSTS"
  mkdir -p "$SHARED" "$WORK/slurm"/{state,log,munge,munge-private}
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -f "$KEY"
  local h spec=()
  for h in "${HOSTS[@]}"; do spec+=("$h:$NODE_CPU"); done
  "$LAB_SH" up "${spec[@]}" >>"$RUN_LOG" 2>&1 || die "lab.sh up failed (see $RUN_LOG)"
  for h in "${HOSTS[@]}"; do
    IP[$h]=$("$LAB_SH" ip "$h")
    "$LAB_SH" exec "$h" sh -c 'umask 077; mkdir -p /root/.ssh; cat >> /root/.ssh/authorized_keys' <"$KEY.pub"
    "$LAB_SH" share "$h" "$SHARED" "$SHARED"
    "$LAB_SH" share "$h" "$WORK/slurm" "$WORK/slurm"
  done
  start_munge
  write_slurm_conf
  slurmctld -D -f "$SLURM_CONF" >"$WORK/slurm/log/slurmctld.console" 2>&1 &
  PIDS+=($!)
  for h in "${HOSTS[@]}"; do start_slurmd "$h"; done
  for _ in $(seq 300); do
    [ "$(sinfo --noheader --Node --format='%t' 2>/dev/null | grep -c '^idle')" = "${#HOSTS[@]}" ] && return
    sleep 0.2
  done
  die "Slurm nodes not idle: $(sinfo --noheader --Node --format='%N %t' 2>&1 | tr '\n' ' ')"
}

start_munge() { # its own key and socket, reached by the hosts through the bound dir
  local d=$WORK/slurm
  chown munge:munge "$d/munge" "$d/munge-private"
  chmod 755 "$d/munge"; chmod 700 "$d/munge-private"
  head -c 1024 /dev/urandom >"$d/munge-private/munge.key"
  chown munge:munge "$d/munge-private/munge.key"; chmod 400 "$d/munge-private/munge.key"
  runuser -u munge -- /usr/sbin/munged --key-file="$d/munge-private/munge.key" --socket="$d/munge/socket" \
    --pid-file="$d/munge-private/pid" --log-file="$d/munge-private/log" --seed-file="$d/munge-private/seed"
  for _ in $(seq 50); do [ -S "$d/munge/socket" ] && return; sleep 0.1; done
  die "munged did not start"
}

write_slurm_conf() {
  local d=$WORK/slurm h
  {
    cat <<EOF
ClusterName=dslbench
SlurmctldHost=$(hostname -s)($LAB_NET.1)
SlurmctldPort=$SLURM_PORT
SlurmdPort=$((SLURM_PORT + 1))
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$d/munge/socket
CredType=cred/munge
StateSaveLocation=$d/state
SlurmdSpoolDir=/tmp/slurmd
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=/tmp/slurmd/slurmd.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=/tmp/slurmd/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$d/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
EOF
    for h in "${HOSTS[@]}"; do echo "NodeName=$h NodeAddr=${IP[$h]} CPUs=$SLURM_CPUS State=UNKNOWN"; done
    echo "PartitionName=video Nodes=$(IFS=,; echo "${HOSTS[*]}") Default=YES MaxTime=INFINITE State=UP"
  } >"$SLURM_CONF"
}

start_slurmd() { # in the host, inside its CPU quota (the jobs it starts too)
  local h=$1 cg=/sys/fs/cgroup/cpu/$LAB_NS-$1
  "$LAB_SH" exec "$h" sh -c 'mountpoint -q /sys/fs/cgroup || mount -t tmpfs cgroup_stub /sys/fs/cgroup
    mkdir -p /sys/fs/cgroup/systemd /tmp/slurmd
    mountpoint -q /sys/fs/cgroup/systemd || mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd'
  sh -c "echo \$\$ > $cg/cgroup.procs; exec $LAB_SH exec $h slurmd -D -f $SLURM_CONF -N $h" \
    >"$WORK/slurm/log/slurmd-$h.console" 2>&1 &
  PIDS+=($!)
}

# ---- inventories and runs --------------------------------------------------
inventory() { # engine -> path
  local f=$WORK/inventory-$1.yaml h
  {
    echo "# generated by bench/slurm.sh"
    echo "cluster:"
    echo "  shared_dir: \"$SHARED\""
    if [ "$1" = slurm ]; then
      echo "  engine: slurm"
      echo "  partition: video"
      echo "nodes:"
      echo "  controller: { host: local, roles: [controller] }"
    else
      echo "  storage: nfs"
      echo "nodes:"
      echo "  controller: { host: local, roles: [controller, storage] }"
      for h in "${HOSTS[@]}"; do
        echo "  $h: { host: ${IP[$h]}, user: root, roles: [compute], identity_file: \"$KEY\" }"
      done
    fi
  } >"$f"
  echo "$f"
}

stamp() { local l; while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done; }

transcode() { # engine out rep
  local chunk=()
  [ -n "${CHUNK:-}" ] && chunk=(--chunk "$CHUNK")
  rm -rf "$XDG_STATE_HOME"
  # shellcheck disable=SC2086
  "$DFFMPEG" transcode -I "$(inventory "$1")" --json --fresh -y -o "$2" "${chunk[@]}" "$CLIP" $ARGS |
    stamp >"$WORK/events-$1-$3.jsonl"
}

plain_on_n1() {
  # shellcheck disable=SC2086
  ssh -i "$KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=error \
    "root@${IP[n1]}" "ffmpeg -nostdin -loglevel error -y -i $(printf %q "$CLIP") $ARGS $(printf %q "$1")"
}

# dffmpeg's slots for the run (its batch_start event).
slots_of() { sed -n '/"event":"batch_start"/{s/.*\],"slots":\([0-9]*\).*/\1/p;q}' "$1"; }

one() { # what rep
  local out=$SHARED/out-$1-$2.mp4 r wall cpu others rc n
  rm -f "$out"
  echo "== $1 rep $2" >>"$RUN_LOG"
  wait_idle
  case $1 in
    baseline) timed r plain_on_n1 "$out" ;;
    *) timed r transcode "$1" "$out" "$2" ;;
  esac
  read -r wall cpu others rc <<<"$r"
  n=0; [ "$rc" = 0 ] && n=$(frames "$out")
  local sl=""
  [ "$1" != baseline ] && sl=$(slots_of "$WORK/events-$1-$2.jsonl")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$wall" "$others" "$rc" "$n" "$sl" >>"$TSV"
  log "  $(printf '%-8s' "$1") rep $2: ${wall}s rc $rc frames $n/$IN_FRAMES (others ${others}s CPU)${sl:+, $sl slots}"
}

probes() { # median seconds of an empty job, srun vs ssh (multiplexed)
  local t0 cm=$WORK/cm-%h
  ssh -i "$KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=error \
    -o ControlMaster=yes -o ControlPath="$cm" -o ControlPersist=120 -fN "root@${IP[n1]}"
  for _ in $(seq "$PROBES"); do
    t0=$EPOCHREALTIME; srun --partition=video --nodelist=n1 --nodes=1 --ntasks=1 --quiet true
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}' >>"$WORK/probe-srun"
    t0=$EPOCHREALTIME; ssh -o ControlPath="$cm" "root@${IP[n1]}" true
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}' >>"$WORK/probe-ssh"
  done
  ssh -o ControlPath="$cm" -O exit "root@${IP[n1]}" 2>/dev/null
}

main() {
  if [ "${REPORT_ONLY:-0}" = 1 ]; then
    CLIP=$SHARED/clip-${DURATION}s.mp4; IN_FRAMES=$(frames "$CLIP")
    trap - EXIT; report; return
  fi
  mkdir -p "$WORK"
  : >"$RUN_LOG"
  rm -f "$WORK/probe-srun" "$WORK/probe-ssh"
  printf 'what\trep\twall_s\tothers_cpu_s\trc\tframes\tslots\n' >"$TSV"
  CLIP=$SHARED/clip-${DURATION}s.mp4
  setup_lab
  make_clip "$CLIP" "$DURATION"
  IN_FRAMES=$(frames "$CLIP")
  log "hosts: ${HOSTS[*]} with $NODE_CPU CPU each (quota hidden), Slurm nodes idle; clip $DURATION s, $IN_FRAMES frames"
  one baseline 0
  for rep in $(seq "$REPS"); do
    if [ $((rep % 2)) = 1 ]; then one ssh "$rep"; one slurm "$rep"; else one slurm "$rep"; one ssh "$rep"; fi
  done
  one baseline 1
  probes
  report
}

report() {
  local base p_srun p_ssh e
  base=$(awk -F'\t' '$1=="baseline" && $5==0 {print $3}' "$TSV" | median)
  echo
  echo "Same clip ($DURATION s 720p, $ARGS), ${#HOSTS[@]} hosts × $NODE_CPU CPU (quota hidden); $(nproc) cores, shared machine."
  echo "Baseline: one plain ffmpeg on n1 (1 host CPU): ${base} s."
  echo
  echo "| engine | slots | wall (median of $REPS) | speedup | efficiency (÷ $CPUS CPUs) | frames |"
  echo "|---|---|---|---|---|---|"
  for e in ssh slurm; do
    local w f sl
    w=$(awk -F'\t' -v e="$e" '$1==e && $5==0 {print $3}' "$TSV" | median)
    sl=$(awk -F'\t' -v e="$e" '$1==e {print $7}' "$TSV" | sort -u | tr '\n' ' ')
    f=$(awk -F'\t' -v e="$e" '$1==e {print $6}' "$TSV" | sort -u | tr '\n' ' ')
    echo "| $e | $sl| ${w} s | $(ratio "$base" "$w")× | $(awk -v b="$base" -v w="$w" -v c="$CPUS" 'BEGIN{ if (w>0) printf "%.0f %%", 100*b/(w*c); else print "n/a"}') | $f/ $IN_FRAMES |"
  done
  p_srun=$(median <"$WORK/probe-srun"); p_ssh=$(median <"$WORK/probe-ssh")
  echo
  echo "Empty job, median of $PROBES: \`srun -w n1 true\` ${p_srun} s; \`ssh n1 true\` over a live master ${p_ssh} s."
  awk '/Name=dffmpeg-/ { n++; for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      cmd = "date -d " v["SubmitTime"] " +%s"; cmd | getline sub_t; close(cmd)
      cmd = "date -d " v["StartTime"] " +%s"; cmd | getline start_t; close(cmd)
      w = start_t - sub_t; if (w > max) max = w }
    END { printf "Slurm records %d dffmpeg jobs (chunk attempts, side streams); longest wait from submission to start: %d s (1 s resolution).\n", n, max }' \
    "$WORK/slurm/log/jobcomp.txt"
  echo "Raw: $TSV, events $WORK/events-*.jsonl, Slurm's job records $WORK/slurm/log/jobcomp.txt."
}

main "$@"
