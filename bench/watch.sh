#!/bin/bash
# bench/watch.sh — issue 21: what an idle `dffmpeg transcode --watch` costs.
# A tree of FILES finished files (each input's output already exists, as in
# an upload/ folder whose videos were all transcoded), nothing new arriving;
# dffmpeg watches it for SECS seconds after a warm-up, and its CPU time
# (the whole process tree) is read from a cgroup of its own — cgroup v2
# cpu.stat usage_usec, else the v1 cpuacct controller, else (no root, no
# cgroups) /proc/PID/stat of dffmpeg and its reaped children.
#
#   cargo build --release && bench/watch.sh
#   SECS=330 bench/watch.sh      # a window that holds one 5-minute safety walk
#   DFFMPEG=/path/to/old/dffmpeg bench/watch.sh   # another build, same tree
#
# Environment:
#   FILES=10000     finished files
#   DIRS=100        folders they are spread over (one level below upload/)
#   SECS=60         the idle window measured
#   WARMUP=15       seconds from the start to the window: start-up, the first
#                   walk, and the default --settle (5 s)
#   DFFMPEG=...     binary (default: target/release/dffmpeg of this repo)
#   WORK=/var/tmp/dffmpeg-bench-watch   the tree (reused), logs
#
# Prints a Markdown table: CPU seconds in the window, CPU-s per minute, % of
# one core (target ≤ 0.1 %), the start-up's CPU (the first walk: what each
# 5-minute safety walk costs at most) and the idle cost with those walks
# counted in. Exit status 1 if dffmpeg died or took a file (not idle).
set -uo pipefail
. "$(dirname "$0")/lib.sh"

setup() {
  FILES=${FILES:-10000}
  DIRS=${DIRS:-100}
  SECS=${SECS:-60}
  WARMUP=${WARMUP:-15}
  WORK=${WORK:-/var/tmp/dffmpeg-bench-watch}
  find_dffmpeg
  need awk seq xargs
  UP=$WORK/upload
  OUT=$WORK/output
  mkdir -p "$WORK"
}

# The tree: DIRS folders, FILES tiny "videos" in all, each with its output.
make_tree() {
  local stamp=$WORK/tree-$FILES-$DIRS d per from
  [ -e "$stamp" ] && { log "reusing the tree of $FILES files in $UP"; return; }
  log "making $FILES finished files in $DIRS folders"
  rm -rf "$UP" "$OUT" "$WORK"/tree-*
  per=$(( (FILES + DIRS - 1) / DIRS ))
  for ((d = 0; d < DIRS; d++)); do
    from=$((d * per))
    [ "$from" -ge "$FILES" ] && break
    local last=$((from + per - 1)); [ "$last" -ge "$FILES" ] && last=$((FILES - 1))
    for root in "$UP" "$OUT"; do
      mkdir -p "$root/d$d"
      seq -f "$root/d$d/f%06g.mp4" "$from" "$last" | xargs touch
    done
  done
  touch "$stamp"
}

# A cgroup of our own for dffmpeg: sets CG and CG_MODE (v2 | v1 | proc).
cgroup_make() {
  CG= CG_MODE=proc
  [ "$(id -u)" = 0 ] || return 0
  local v2 v1
  v2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
  v1=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpuacct(,|$)/ { print $2; exit }' /proc/mounts)
  if [ -n "$v2" ] && mkdir "$v2/dffmpeg-bench-watch.$$" 2>/dev/null; then
    CG=$v2/dffmpeg-bench-watch.$$ CG_MODE=v2
    [ -r "$CG/cpu.stat" ] || { rmdir "$CG"; CG= CG_MODE=proc; }
  fi
  if [ -z "$CG" ] && [ -n "$v1" ] && mkdir "$v1/dffmpeg-bench-watch.$$" 2>/dev/null; then
    CG=$v1/dffmpeg-bench-watch.$$ CG_MODE=v1
  fi
}

# CPU microseconds used so far by dffmpeg's process tree.
usage_us() {
  case $CG_MODE in
    v2) awk '$1 == "usage_usec" { print $2 }' "$CG/cpu.stat" ;;
    v1) awk '{ printf "%d\n", $1 / 1000 }' "$CG/cpuacct.usage" ;;
    proc) sed 's/.*) //' "/proc/$PID/stat" |
      awk -v hz="$(getconf CLK_TCK)" '{ printf "%d\n", ($12 + $13 + $14 + $15) * 1e6 / hz }' ;;
  esac
}

cleanup() {
  [ -n "${PID:-}" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  [ -n "${CG:-}" ] && rmdir "$CG" 2>/dev/null
  return 0
}

measure() {
  cgroup_make
  trap cleanup EXIT
  log "watching $UP ($FILES files) with $DFFMPEG; CPU from ${CG:-/proc} ($CG_MODE)"
  (
    [ -n "$CG" ] && echo "$BASHPID" >"$CG/cgroup.procs"
    exec env -u DFFMPEG_INVENTORY "$DFFMPEG" transcode --json --watch -O "$OUT" "$UP" -c:v mpeg4
  ) >"$WORK/watch.jsonl" 2>"$WORK/watch.err" &
  PID=$!
  local u0 u1 t1 t2
  sleep "$WARMUP"
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/watch.err" >&2; die "dffmpeg ended during the warm-up"; }
  u0=$(usage_us); t1=$EPOCHREALTIME
  sleep "$SECS"
  u1=$(usage_us); t2=$EPOCHREALTIME
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/watch.err" >&2; die "dffmpeg ended during the window"; }
  cleanup; PID=
  if grep -q '"job_start"' "$WORK/watch.jsonl"; then
    log "dffmpeg took a file: the tree was not finished (see $WORK/watch.jsonl)"; STATUS=1
  fi
  report "$t1" "$t2" "$u0" "$u1"
}

report() { # t1 t2 u0 u1
  awk -v t1="$1" -v t2="$2" -v u0="$3" -v u1="$4" -v files="$FILES" -v bin="$DFFMPEG" '
    BEGIN {
      win = t2 - t1; cpu = (u1 - u0) / 1e6; start = u0 / 1e6
      permin = cpu / win * 60; pct = cpu / win * 100
      # one safety walk every 5 minutes, each at most the start-up
      withwalks = permin + start / 5; pctw = withwalks / 60 * 100
      printf "| files | window s | CPU-s | CPU-s/min | %% of a core | start-up CPU-s (first walk) | with a walk per 5 min: CPU-s/min (%% of a core) |\n"
      printf "|---|---|---|---|---|---|---|\n"
      printf "| %d | %.1f | %.4f | %.4f | %.4f %% | %.3f | %.4f (%.4f %%) |\n", files, win, cpu, permin, pct, start, withwalks, pctw
      printf "\nbinary: %s; target: idle <= 0.1 %% of a core\n", bin
    }'
}

STATUS=0
setup
make_tree
measure
exit "$STATUS"
