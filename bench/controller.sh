#!/bin/bash
# bench/controller.sh — issue 21: what the controller costs. Two test hosts
# of 1.0 CPU each whose quota is hidden inside (bench/lab.sh), a 40 s 720p25
# clip with audio; dffmpeg's controller CPU is read from a cgroup around its
# whole process tree (every ffmpeg, ffprobe and ssh it starts on this
# machine) and divided by the CPU-seconds of one single-threaded plain
# ffmpeg (`-threads 1`) doing the same job here.
#
#   cargo build --release
#   sudo bench/controller.sh            # the table (~6 min on 2 idle cores)
#   sudo PROFILE=1 bench/controller.sh  # + one profiled run per row: CPU by activity
#
# Rows: libx264 medium and mpeg4 -b:v 1M (+ aac), storage nfs (the input in
# the shared dir, read in place by the nodes; the controller is the storage
# node) and ssh (chunks travel over ssh); and a folder of 8 mpeg4 clips
# (5–12 s) with nfs. dffmpeg's speed memory is cleared before every run
# (a first job). Every output's frame count is checked.
#
# Environment: REPS=2, DURATION=40, ROWS="x264-nfs x264-ssh mpeg4-nfs
# mpeg4-ssh folder-nfs", PROFILE=0, WORK=/var/tmp/dffmpeg-bench-controller,
# LAB_DIR=/var/tmp/dlab-ctl LAB_BR=br-dlctl LAB_NET=198.18.52 LAB_NS=dlctl,
# IDLE_WAIT=30, DFFMPEG=target/release/dffmpeg.
#
# Output: a Markdown table on stdout; $WORK/controller.tsv (every run),
# $WORK/runs.log, $WORK/profile-*.log (PROFILE=1: one line per process the
# controller ran: KIND START END USER SYS).
set -uo pipefail
. "$(dirname "$0")/lib.sh"

setup() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, mounts, cgroups)"
  need ffmpeg ffprobe ssh ssh-keygen ip nsenter unshare
  export LAB_DIR=${LAB_DIR:-/var/tmp/dlab-ctl} LAB_BR=${LAB_BR:-br-dlctl}
  export LAB_NET=${LAB_NET:-198.18.52} LAB_NS=${LAB_NS:-dlctl} LAB_QUOTA=hidden
  LAB_SH=$BENCH_DIR/lab.sh
  REPS=${REPS:-2} DURATION=${DURATION:-40} PROFILE=${PROFILE:-0} IDLE_WAIT=${IDLE_WAIT:-30}
  ROWS=${ROWS:-"x264-nfs x264-ssh mpeg4-nfs mpeg4-ssh folder-nfs"}
  find_dffmpeg
  WORK=${WORK:-/var/tmp/dffmpeg-bench-controller}
  SHARED=$WORK/shared
  KEY=$LAB_DIR/id_ed25519
  export DFFMPEG_KNOWN_HOSTS=$WORK/known_hosts XDG_STATE_HOME=$WORK/state
  mkdir -p "$SHARED"/{media,out,folder} "$LAB_DIR"
  RUN_LOG=$WORK/runs.log TSV=$WORK/controller.tsv
  : >"$RUN_LOG"
  printf 'row\trep\tcontroller_cpu_s\twork_cpu_s\tratio\twall_s\trc\tframes\tin_frames\n' >"$TSV"
  CLIP=$SHARED/media/clip-${DURATION}s.mp4
  make_clip "$CLIP" "$DURATION"
  local i s
  for i in 1 2 3 4 5 6 7 8; do
    s=$((4 + i)) # 5..12 s
    make_clip "$SHARED/folder/c$i-${s}s.mp4" "$s"
  done
}
declare -gA ARGS=([x264]="-c:v libx264 -preset medium -c:a aac" [mpeg4]="-c:v mpeg4 -b:v 1M -c:a aac")
declare -gA IP

teardown() { "$LAB_SH" down >/dev/null 2>&1 || true; cgroup_rm; }
SSH_OPTS=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o IdentitiesOnly=yes)
hosts_up() {
  teardown
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C dffmpeg-bench -f "$KEY" || die "ssh-keygen failed"
  rm -f "$DFFMPEG_KNOWN_HOSTS"
  "$LAB_SH" up n1:1 n2:1 >>"$RUN_LOG" 2>&1 || die "lab.sh up failed (see $RUN_LOG)"
  local h
  for h in n1 n2; do
    IP[$h]=$("$LAB_SH" ip "$h")
    "$LAB_SH" exec "$h" sh -c 'umask 077; mkdir -p /root/.ssh; cat >> /root/.ssh/authorized_keys' <"$KEY.pub"
    "$LAB_SH" share "$h" "$SHARED" "$SHARED"
    ssh -n "${SSH_OPTS[@]}" -i "$KEY" "root@${IP[$h]}" "ffmpeg -version >/dev/null" || die "host $h: no ssh or ffmpeg"
  done
}

inventory() { # storage -> path
  local f=$WORK/inventory-$1.yaml roles=controller
  [ "$1" = nfs ] && roles="controller, storage"
  {
    echo "cluster: { storage: $1, shared_dir: \"$SHARED\" }"
    echo "nodes:"
    echo "  controller: { host: local, roles: [$roles] }"
    echo "  n1: { host: ${IP[n1]}, user: root, roles: [compute], identity_file: \"$KEY\" }"
    echo "  n2: { host: ${IP[n2]}, user: root, roles: [compute], identity_file: \"$KEY\" }"
  } >"$f"
  echo "$f"
}

# A cgroup of our own around dffmpeg's process tree: CG, CG_MODE (v2 | v1).
cgroup_make() {
  local v2 v1
  v2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
  v1=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpuacct(,|$)/ { print $2; exit }' /proc/mounts)
  CG=
  if [ -n "$v2" ] && mkdir -p "$v2/dffmpeg-bench-ctl" 2>/dev/null && [ -r "$v2/dffmpeg-bench-ctl/cpu.stat" ]; then
    CG=$v2/dffmpeg-bench-ctl CG_MODE=v2
  elif [ -n "$v1" ] && mkdir -p "$v1/dffmpeg-bench-ctl"; then
    CG=$v1/dffmpeg-bench-ctl CG_MODE=v1
  else
    die "no cgroup with CPU accounting"
  fi
}
cgroup_rm() { [ -n "${CG:-}" ] && rmdir "$CG" 2>/dev/null; return 0; }
usage_s() {
  case $CG_MODE in
    v2) awk '$1 == "usage_usec" { printf "%.3f\n", $2 / 1e6 }' "$CG/cpu.stat" ;;
    v1) awk '{ printf "%.3f\n", $1 / 1e9 }' "$CG/cpuacct.usage" ;;
  esac
}

# Run "$@" inside the cgroup; sets CPU (its CPU-s) and RC.
in_cgroup() {
  local u0 u1
  u0=$(usage_s)
  ( echo "$BASHPID" >"$CG/cgroup.procs" && exec "$@" ) >>"$RUN_LOG" 2>&1
  RC=$?
  u1=$(usage_s)
  CPU=$(awk -v a="$u0" -v b="$u1" 'BEGIN{printf "%.3f", b-a}')
}

# The single-threaded work: plain ffmpeg -threads 1 on each input; sets WORK_CPU.
work_cpu() { # codec inputs...
  local c=$1 f t=0
  shift
  for f in "$@"; do
    # shellcheck disable=SC2086
    in_cgroup ffmpeg -nostdin -loglevel error -y -threads 1 -i "$f" ${ARGS[$c]} -threads 1 "$WORK/plain.mkv"
    [ "$RC" = 0 ] || die "plain ffmpeg failed on $f (see $RUN_LOG)"
    t=$(awk -v a="$t" -v b="$CPU" 'BEGIN{printf "%.3f", a+b}')
  done
  WORK_CPU=$t
}

# One dffmpeg run: sets CPU, RC, WALL, FRAMES (sum over the outputs), IN.
dffmpeg_run() { # row profile(0|1)
  local row=$1 codec=${1%%-*} storage=${1##*-} inv out t0 path=$PATH
  inv=$(inventory "$storage")
  rm -rf "$XDG_STATE_HOME" "$SHARED/out"/*
  if [ "$2" = 1 ]; then
    export SHIM_REAL_FFMPEG SHIM_REAL_FFPROBE SHIM_REAL_SSH SHIM_LOG=$WORK/profile-$row.log
    SHIM_REAL_FFMPEG=$(command -v ffmpeg) SHIM_REAL_FFPROBE=$(command -v ffprobe) SHIM_REAL_SSH=$(command -v ssh)
    : >"$SHIM_LOG"
    path=$BENCH_DIR/profile-shim:$PATH
  fi
  [ "$codec" = folder ] && codec=mpeg4
  wait_idle
  t0=$EPOCHREALTIME
  if [ "$row" = folder-nfs ]; then
    # shellcheck disable=SC2086
    in_cgroup env PATH="$path" "$DFFMPEG" transcode -I "$inv" --json --fresh -y -O "$SHARED/out" "$SHARED/folder" ${ARGS[$codec]}
  else
    out=$SHARED/out/$row.mkv
    # shellcheck disable=SC2086
    in_cgroup env PATH="$path" "$DFFMPEG" transcode -I "$inv" --json --fresh -y -o "$out" "$CLIP" ${ARGS[$codec]}
  fi
  WALL=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}')
  FRAMES=0
  for out in "$SHARED/out"/*; do
    [ -f "$out" ] && FRAMES=$((FRAMES + $(frames "$out")))
  done
}

# CPU-s by activity from a profile log, and the rest (dffmpeg itself).
profile_line() { # log total
  awk -v total="$2" '{ cpu[$1] += $4 + $5; n[$1]++; sum += $4 + $5 }
    END { for (k in cpu) printf "%s %.2f s (%d), ", k, cpu[k], n[k]; printf "dffmpeg itself %.2f s", total - sum }' "$1"
}

main() {
  BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
  setup
  trap teardown EXIT
  hosts_up
  cgroup_make
  declare -A WORK_OF IN_OF
  work_cpu x264 "$CLIP"; WORK_OF[x264]=$WORK_CPU
  work_cpu mpeg4 "$CLIP"; WORK_OF[mpeg4]=$WORK_CPU
  work_cpu mpeg4 "$SHARED/folder"/*.mp4; WORK_OF[folder]=$WORK_CPU
  IN_OF[clip]=$(frames "$CLIP")
  local f n=0
  for f in "$SHARED/folder"/*.mp4; do n=$((n + $(frames "$f"))); done
  IN_OF[folder]=$n
  log "single-threaded work: x264 ${WORK_OF[x264]} s, mpeg4 ${WORK_OF[mpeg4]} s, folder ${WORK_OF[folder]} s"
  local row rep in ratio
  for rep in $(seq 1 "$REPS"); do
    for row in $ROWS; do
      in=${IN_OF[clip]}; [ "$row" = folder-nfs ] && in=${IN_OF[folder]}
      dffmpeg_run "$row" 0
      ratio=$(awk -v c="$CPU" -v w="${WORK_OF[${row%%-*}]}" 'BEGIN{printf "%.3f", c/w}')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$rep" "$CPU" "${WORK_OF[${row%%-*}]}" "$ratio" "$WALL" "$RC" "$FRAMES" "$in" >>"$TSV"
      log "  $row rep $rep: controller ${CPU} s CPU = ${ratio} of the work, ${WALL} s, rc $RC, frames $FRAMES/$in"
    done
  done
  echo "| job | storage | controller CPU-s | ÷ single-threaded work (median, runs) | frames exact |"
  echo "|---|---|---|---|---|"
  for row in $ROWS; do
    local q c n ok
    q=$(awk -F'\t' -v r="$row" 'NR>1 && $1==r {print $5}' "$TSV" | sort -g)
    c=$(awk -F'\t' -v r="$row" 'NR>1 && $1==r {print $3}' "$TSV" | median)
    n=$(awk -F'\t' -v r="$row" 'NR>1 && $1==r' "$TSV" | wc -l)
    ok=$(awk -F'\t' -v r="$row" 'NR>1 && $1==r && $7==0 && $8==$9' "$TSV" | wc -l)
    printf '| %s | %s | %s | **%s** (%s) | %s/%s |\n' "${row%%-*}" "${row##*-}" "$c" \
      "$(median <<<"$q")" "$(echo $q)" "$ok" "$n"
  done
  if [ "$PROFILE" = 1 ]; then
    echo
    echo "Controller CPU by activity (one profiled run each; the shims add a bash per process):"
    echo
    for row in $ROWS; do
      dffmpeg_run "$row" 1
      echo "- $row: total ${CPU} s: $(profile_line "$WORK/profile-$row.log" "$CPU")"
    done
  fi
}
main "$@"
