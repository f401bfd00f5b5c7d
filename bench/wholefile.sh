#!/bin/bash
# bench/wholefile.sh — how library tools (Tdarr, Unmanic, FileFlows) use a
# cluster: every free host gets the next whole file, over ssh, and encodes
# it alone. The inputs lie in a directory every host sees at the same path
# (the shared directory); the outputs are written there too.
#
#   wholefile.sh -H IP,IP,... -i KEY -o OUTDIR FILE... -- FFMPEG ARGS...
#
# One worker per host pulls the next file from a queue (a lock file guards
# it); each finished file is logged with its time on stderr:
# `done SECONDS FILE`. Exit 1 if any file failed.
set -uo pipefail
hosts='' key='' out=''
while getopts H:i:o: o; do
  case $o in H) hosts=$OPTARG ;; i) key=$OPTARG ;; o) out=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
files=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do files+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
[ -n "$hosts" ] && [ -n "$out" ] && [ ${#files[@]} -gt 0 ] || { sed -n 2,12p "$0" >&2; exit 2; }
q=$(mktemp -d)
trap 'rm -rf "$q"' EXIT
printf '%s\n' "${files[@]}" >"$q/queue"
: >"$q/failed"
t0=$EPOCHREALTIME
ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
[ -n "$key" ] && ssh_opts+=(-i "$key" -o IdentitiesOnly=yes)

next() { # pop the first file of the queue (under the lock)
  (
    flock 9
    head -n 1 "$q/queue"
    sed -i 1d "$q/queue"
  ) 9>"$q/lock"
}

worker() { # host ffmpeg-args...
  local host=$1 f dest
  shift
  while f=$(next) && [ -n "$f" ]; do
    dest=$out/$(basename "$f")
    if ssh -n "${ssh_opts[@]}" "root@$host" \
      "ffmpeg -nostdin -loglevel error -y -i $(printf %q "$f") $(printf '%q ' "$@") $(printf %q "$dest")" \
      >/dev/null 2>>"$q/err"; then
      awk -v a="$t0" -v b="$EPOCHREALTIME" -v f="$f" 'BEGIN{printf "done %.3f %s\n", b-a, f}' >&2
    else
      echo "$f" >>"$q/failed"
    fi
  done
}

args=("$@")
pids=()
IFS=, read -ra ips <<<"$hosts"
for ip in "${ips[@]}"; do
  worker "$ip" "${args[@]}" &
  pids+=($!)
done
wait "${pids[@]}"
[ -s "$q/failed" ] && { cat "$q/err" >&2; exit 1; }
exit 0
