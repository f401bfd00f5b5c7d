#!/bin/bash
# bench/original.sh — the original dffmpeg.sh (v1.3) algorithm, re-created
# from its description (../shared/reference.md, issue 6) as a baseline for
# the benchmarks. No code of the original is used.
#
#   bench/original.sh -H HOST[,HOST...] [-w W[,W...]] -d SHARED_DIR [-i KEY] [-u USER] \
#                     INPUT OUTPUT [FFMPEG OUTPUT ARGS...]
#   e.g. bench/original.sh -H 198.18.50.11,198.18.50.12 -w 1,1 -d /var/tmp/dlab-bench/shared \
#          -i /var/tmp/dlab-bench/id_ed25519 clip.mp4 out.mp4 -c:v mpeg4 -b:v 1M
#
# HOST is an address reached over SSH, or `local` for this machine (no SSH).
# Weights default to 1 each. SHARED_DIR must be visible at the same path on
# every host (NFS in the original; a bind mount on test hosts: lab.sh share).
# Environment: SSH_USER (root), SSH_KEY, SSH_PORT (22), POLL (0.2 s),
# KEEP_TEMP=1 keeps the parts, CHECK=0 skips the frame/audio check (which
# decodes input and output: the caller checks, e.g. bench/scaling.sh).
#
# The algorithm, as the original did it:
#  1. copy the input into SHARED/upload/ under a timestamp name;
#  2. duration from ffprobe; split the timeline by static weights with bc at
#     scale=2 (cut points truncated to 2 decimals): part i is
#     [start, start + dur*w_i/sum(w)), the next starts where it ends — so the
#     last part ends at the truncated sum (e.g. 59.99 s for weights 4,2,1);
#  3. per host, in the background over SSH:
#       ffmpeg -i upload/F -ss A -to B ARGS tmp/F_i.mp4; touch tmp/F_i.txt
#     (`-ss` after `-i` = output seeking: every host decodes from the start of
#     the file up to A; audio is encoded per part; the marker is written even
#     when ffmpeg fails, as in the original — here it records the exit status);
#  4. poll for the markers — FIXED: waits for every part (the original's
#     one-word test `[ $i==$[$node_number - 1] ]` was always true, so it
#     merged as soon as part 0 existed), then merge the parts with the concat
#     demuxer and stream copy into SHARED/download/, and delete temporaries.
# Deviations, all outside the timed algorithm: the merged file is moved to
# OUTPUT; quoting is safe; ffmpeg gets -nostdin; `local` hosts need no SSH.
#
# At the end it checks the result and prints one line (for scripts):
#   RESULT wall=S parts=N in_frames=N out_frames=N exact=yes|no in_audio=S out_audio=S failed_parts=N
# plus per part: host, range, seconds. Exit status 1 if a part failed.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
need ffmpeg ffprobe bc

HOSTS=() WEIGHTS=() SHARED=""
SSH_USER=${SSH_USER:-root} SSH_KEY=${SSH_KEY:-} SSH_PORT=${SSH_PORT:-22} POLL=${POLL:-0.2}
usage() { sed -n 2,14p "$0" >&2; exit 2; }
while getopts "H:w:d:i:u:p:h" o; do
  case $o in
    H) IFS=, read -r -a HOSTS <<<"$OPTARG" ;;
    w) IFS=, read -r -a WEIGHTS <<<"$OPTARG" ;;
    d) SHARED=$OPTARG ;;
    i) SSH_KEY=$OPTARG ;;
    u) SSH_USER=$OPTARG ;;
    p) SSH_PORT=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || usage
INPUT=$1 OUTPUT=$2; shift 2
ARGS=("$@")
[ ${#HOSTS[@]} -gt 0 ] || usage
[ -n "$SHARED" ] || usage
[ -f "$INPUT" ] || die "$INPUT: no such file"
N=${#HOSTS[@]}
if [ ${#WEIGHTS[@]} -eq 0 ]; then for _ in "${HOSTS[@]}"; do WEIGHTS+=(1); done; fi
[ ${#WEIGHTS[@]} -eq "$N" ] || die "need one weight per host"

SSH_OPTS=(-n -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  -o LogLevel=ERROR -o ConnectTimeout=10 -p "$SSH_PORT")
[ -n "$SSH_KEY" ] && SSH_OPTS+=(-i "$SSH_KEY" -o IdentitiesOnly=yes)

on_host() { # HOST COMMAND-STRING (already quoted for a shell)
  if [ "$1" = local ]; then bash -c "$2"; else ssh "${SSH_OPTS[@]}" "$SSH_USER@$1" "$2"; fi
}

T0=$EPOCHREALTIME
mkdir -p "$SHARED"/{upload,tmp,download}
# 1. upload under a timestamp name
ext=${INPUT##*.}; oext=${OUTPUT##*.}
F=$(date +%Y%m%d%H%M%S)-$$
cp "$INPUT" "$SHARED/upload/$F.$ext"
SRC=$SHARED/upload/$F.$ext

# 2. duration and the static split, bc scale=2 (truncating)
DUR=$(ffprobe -v error -show_entries format=duration -of default=nw=1:nk=1 "$SRC")
SUM=0; for w in "${WEIGHTS[@]}"; do SUM=$((SUM + w)); done
START=() END=()
s=0
for i in $(seq 0 $((N - 1))); do
  len=$(echo "scale=2; $DUR*${WEIGHTS[$i]}/$SUM" | bc)
  e=$(echo "scale=2; $s+$len" | bc)
  START+=("$s") END+=("$e")
  s=$e
done

# 3. one background job per host, output seeking, audio encoded per part
q() { printf '%q ' "$@"; }
for i in $(seq 0 $((N - 1))); do
  part=$SHARED/tmp/${F}_$i.$oext marker=$SHARED/tmp/${F}_$i.txt
  cmd="t0=\$(date +%s.%N); $(q ffmpeg -nostdin -loglevel error -y -i "$SRC" -ss "${START[$i]}" -to "${END[$i]}" "${ARGS[@]}" "$part"); echo \$? \$t0 \$(date +%s.%N) > $(q "$marker")"
  on_host "${HOSTS[$i]}" "$cmd" &
done

# 4. wait for every marker (the fixed loop), then concat + stream copy
for i in $(seq 0 $((N - 1))); do
  while [ ! -f "$SHARED/tmp/${F}_$i.txt" ]; do sleep "$POLL"; done
done
wait
LIST=$SHARED/tmp/$F.list
: >"$LIST"
for i in $(seq 0 $((N - 1))); do printf "file '%s'\n" "$SHARED/tmp/${F}_$i.$oext" >>"$LIST"; done
ffmpeg -nostdin -loglevel error -y -f concat -safe 0 -i "$LIST" -c copy "$SHARED/download/$F.$oext"
mrc=$?
T1=$EPOCHREALTIME

failed=0
for i in $(seq 0 $((N - 1))); do
  read -r rc a b <"$SHARED/tmp/${F}_$i.txt"
  [ "$rc" = 0 ] || failed=$((failed + 1))
  printf 'part %d host %s weight %s [%s, %s) rc %s %.2f s\n' "$i" "${HOSTS[$i]}" "${WEIGHTS[$i]}" "${START[$i]}" "${END[$i]}" "$rc" "$(echo "$b - $a" | bc)"
done
[ "$mrc" = 0 ] && mv -f "$SHARED/download/$F.$oext" "$OUTPUT"
if [ "${KEEP_TEMP:-0}" != 1 ]; then
  rm -f "$SHARED/tmp/${F}"_* "$LIST" "$SRC" "$SHARED/download/$F.$oext"
fi

if [ "${CHECK:-1}" = 1 ]; then
  inf=$(frames "$INPUT"); outf=$( [ "$mrc" = 0 ] && frames "$OUTPUT" || echo 0)
  ina=$(stream_duration "$INPUT" a); outa=$( [ "$mrc" = 0 ] && stream_duration "$OUTPUT" a || echo 0)
  exact=no; [ "$inf" = "$outf" ] && exact=yes
else
  inf=unchecked outf=unchecked ina=unchecked outa=unchecked exact=unchecked
fi
printf 'RESULT wall=%.3f parts=%d in_frames=%s out_frames=%s exact=%s in_audio=%s out_audio=%s failed_parts=%d\n' \
  "$(echo "$T1 - $T0" | bc)" "$N" "$inf" "$outf" "$exact" "${ina:-none}" "${outa:-none}" "$failed"
[ "$failed" = 0 ] && [ "$mrc" = 0 ]
