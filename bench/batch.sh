#!/bin/bash
# bench/batch.sh — issue 15: a folder of clips on a cluster, four ways, in
# the same run on the same test hosts (bench/lab.sh; quotas visible):
#   plain      one plain ffmpeg per file, one after the other, on one
#              1.0-CPU host (the baseline: efficiency = its time ÷ (wall ×
#              CPUs))
#   batch      dffmpeg transcode -I INV -O OUT DIR (one connection, one queue;
#              storage: ssh)
#   batch-nfs  the same with storage: nfs, the clips read in place from the
#              shared directory (as wholefile reads them)
#   loop       a shell loop of single-file dffmpeg transcode, file by file
#   wholefile  every free host takes the next whole file (bench/wholefile.sh,
#              like Tdarr/Unmanic/FileFlows), through the shared directory
# for libx264 -preset medium and mpeg4 -b:v 1M (+ aac), on 2 × 1.0 CPU and
# on 1.0 + 0.5 + 0.25; every output's frame count is checked; the time to
# the first finished output is reported.
#
#   cargo build --release
#   sudo bench/batch.sh                   # ~10 min on 2 idle cores
#   sudo QUICK=1 bench/batch.sh           # 6 short clips, mpeg4 only
#
# Clips (CLIPS): 12 of mixed lengths, 5 s to 60 s (320 s in all), 640x360
# 25 fps, h264 + aac, a keyframe every 2 s, in the shared directory.
# Environment: CODECS="x264 mpeg4" SCENARIOS="2x1 het" METHODS="batch batch-nfs loop
# wholefile" REPS=1 WORK=/var/tmp/dffmpeg-bench-batch IDLE_WAIT=30,
# LAB_* as for lab.sh (net 198.18.51 by default). dffmpeg's speed memory is
# cleared before each dffmpeg run (MEMORY=keep: kept).
# Output: a Markdown table on stdout, $WORK/batch.tsv, $WORK/batch.png.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

setup() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, mounts, cgroups)"
  need ffmpeg ffprobe ssh ssh-keygen ip nsenter unshare flock
  find_dffmpeg
  export LAB_DIR=${LAB_DIR:-/var/tmp/dlab-batch} LAB_BR=${LAB_BR:-br-dlbatch}
  export LAB_NET=${LAB_NET:-198.18.51} LAB_NS=${LAB_NS:-dlbatch} LAB_QUOTA=visible
  LAB_SH=$BENCH_DIR/lab.sh
  QUICK=${QUICK:-0}
  if [ "$QUICK" = 1 ]; then CLIPS=${CLIPS:-"5 8 12 20 30 40"}; CODECS=${CODECS:-mpeg4}; fi
  CLIPS=${CLIPS:-"5 8 10 12 15 20 25 30 40 45 50 60"}
  CODECS=${CODECS:-"x264 mpeg4"}
  SCENARIOS=${SCENARIOS:-"2x1 het"}
  METHODS=${METHODS:-"batch batch-nfs loop wholefile"}
  REPS=${REPS:-1}
  IDLE_WAIT=${IDLE_WAIT:-30}
  MEMORY=${MEMORY:-clear}
  WORK=${WORK:-/var/tmp/dffmpeg-bench-batch}
  SHARED=$WORK/shared
  KEY=$LAB_DIR/id_ed25519
  export DFFMPEG_KNOWN_HOSTS=$WORK/known_hosts XDG_STATE_HOME=$WORK/state
  mkdir -p "$WORK/json" "$SHARED/in" "$SHARED/out" "$LAB_DIR"
  RUN_LOG=$WORK/runs.log
  TSV=$WORK/batch.tsv
}

declare -gA ARGS=([x264]="-c:v libx264 -preset medium -c:a aac" [mpeg4]="-c:v mpeg4 -b:v 1M -c:a aac")
declare -gA SC_HOSTS=([2x1]="n1 n2" [het]="n1 half quarter")
declare -gA SC_CPU=([2x1]=2 [het]=1.75)
declare -gA SC_LABEL=([2x1]="2 × 1.0" [het]="1.0 + 0.5 + 0.25")
declare -gA HOST_CPU=([n1]=1 [n2]=1 [half]=0.5 [quarter]=0.25)
declare -gA IP

clips() {
  local s
  for s in $CLIPS; do
    f=$SHARED/in/clip-$(printf %02d "$s")s.mp4
    [ -s "$f" ] && continue
    log "generating $f"
    ffmpeg -hide_banner -nostdin -loglevel error -y \
      -f lavfi -i "testsrc2=size=640x360:rate=25:duration=$s" -f lavfi -i "sine=frequency=440:duration=$s" \
      -map 0:v -map 1:a -c:v libx264 -preset veryfast -crf 23 -g 50 -keyint_min 50 -sc_threshold 0 \
      -pix_fmt yuv420p -c:a aac -b:a 128k "$f.tmp.mp4" && mv "$f.tmp.mp4" "$f"
  done
  chmod -R a+rX "$SHARED"
}

teardown() { "$LAB_SH" down >/dev/null 2>&1 || true; }
SSH_OPTS=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o IdentitiesOnly=yes)
hssh() { local h=$1; shift; ssh -n "${SSH_OPTS[@]}" -i "$KEY" "root@${IP[$h]}" "$@"; }
hosts_up() {
  teardown
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C dffmpeg-bench -f "$KEY" || die "ssh-keygen failed"
  rm -f "$DFFMPEG_KNOWN_HOSTS"
  local spec=() h
  for h in n1 n2 half quarter; do spec+=("$h:${HOST_CPU[$h]}"); done
  "$LAB_SH" up "${spec[@]}" >>"$RUN_LOG" 2>&1 || die "lab.sh up failed (see $RUN_LOG)"
  for h in n1 n2 half quarter; do
    IP[$h]=$("$LAB_SH" ip "$h")
    "$LAB_SH" exec "$h" sh -c 'umask 077; mkdir -p /root/.ssh; cat >> /root/.ssh/authorized_keys' <"$KEY.pub"
    "$LAB_SH" share "$h" "$SHARED" "$SHARED"
    hssh "$h" true || die "host $h: no ssh"
  done
}

inventory() { # storage hosts... -> path (ssh: chunks travel over ssh; nfs: the
  # clips are in the shared directory, read in place, as wholefile reads them)
  local f h storage=$1 roles=controller
  shift
  [ "$storage" = nfs ] && roles="controller, storage"
  f=$WORK/inventory-$storage-$(echo "$@" | tr ' ' '-').yaml
  {
    echo "cluster: { storage: $storage, shared_dir: \"$SHARED\" }"
    echo "nodes:"
    echo "  controller: { host: local, roles: [$roles] }"
    for h in "$@"; do echo "  $h: { host: ${IP[$h]}, user: root, roles: [compute], identity_file: \"$KEY\" }"; done
  } >"$f"
  echo "$f"
}

# ---- the methods: each writes every output into $SHARED/out/$1 ------------
m_plain() { # codec outdir
  local f
  for f in "$SHARED"/in/*.mp4; do
    # shellcheck disable=SC2086
    hssh n1 "ffmpeg -nostdin -loglevel error -y -i $(printf %q "$f") ${ARGS[$1]} $(printf %q "$2/$(basename "$f")")" || return 1
    awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN{printf "first %.3f\n", b-a}' >>"$WORK/first"
  done
}
m_batch() { # codec outdir hosts...
  local c=$1 o=$2 inv
  shift 2
  inv=$(inventory "${STORAGE:-ssh}" "$@")
  # shellcheck disable=SC2086
  "$DFFMPEG" transcode -I "$inv" --json --settle 0 -O "$o" "$SHARED/in" ${ARGS[$c]} >"$WORK/dffmpeg.last"
  awk -F'"t":' '/"event":"job_done"/ {split($2, a, /[,}]/); printf "first %s\n", a[1]; exit}' "$WORK/dffmpeg.last" >>"$WORK/first"
}
m_batch-nfs() { STORAGE=nfs m_batch "$@"; }
m_loop() { # codec outdir hosts...
  local c=$1 o=$2 inv f
  shift 2
  inv=$(inventory ssh "$@")
  for f in "$SHARED"/in/*.mp4; do
    # shellcheck disable=SC2086
    "$DFFMPEG" transcode -I "$inv" -o "$o/$(basename "$f")" "$f" ${ARGS[$c]} >/dev/null || return 1
    awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN{printf "first %.3f\n", b-a}' >>"$WORK/first"
  done
}
m_wholefile() { # codec outdir hosts...
  local c=$1 o=$2 ips=() h
  shift 2
  for h in "$@"; do ips+=("${IP[$h]}"); done
  # shellcheck disable=SC2086
  "$BENCH_DIR/wholefile.sh" -H "$(IFS=,; echo "${ips[*]}")" -i "$KEY" -o "$o" "$SHARED"/in/*.mp4 -- ${ARGS[$c]} 2>"$WORK/wholefile.last"
  local rc=$?
  awk '/^done / {print "first " $2; exit}' "$WORK/wholefile.last" >>"$WORK/first"
  return $rc
}

exact() { # outdir: files whose frame count equals the input's
  local f n=0 t=0
  for f in "$SHARED"/in/*.mp4; do
    t=$((t + 1))
    [ "$(frames "$1/$(basename "$f")")" = "$(frames "$f")" ] && n=$((n + 1))
  done
  echo "$n/$t"
}

one() { # codec scenario method rep
  local c=$1 s=$2 m=$3 o=$SHARED/out/$1-$2-$3 r
  rm -rf "$o"; mkdir -p "$o"; chmod 777 "$o"
  : >"$WORK/first"
  [ "$MEMORY" = keep ] || rm -rf "$XDG_STATE_HOME"
  echo "== $c $s $m rep $4" >>"$RUN_LOG"
  wait_idle
  T0=$EPOCHREALTIME
  # shellcheck disable=SC2086
  case $m in
    plain) timed r m_plain "$c" "$o" ;;
    *) timed r "m_$m" "$c" "$o" ${SC_HOSTS[$s]} ;;
  esac
  read -r wall _ others rc <<<"$r"
  local first ex
  first=$(awk '{print $2; exit}' "$WORK/first")
  ex=$(exact "$o")
  case $m in batch*) cp "$WORK/dffmpeg.last" "$WORK/json/$c-$s-$m-$4.jsonl" ;; esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$s" "$m" "$4" "$wall" "$others" "$rc" "$ex" "${first:-}" >>"$TSV"
  log "  $c $s $m rep $4: ${wall}s rc $rc exact $ex first ${first:-?}s (others ${others}s)"
}

report() {
  local c s m base w sp e first ex
  echo
  echo "## Batch on test hosts — $(date -u +%F): $(echo $CLIPS | wc -w) clips of $(echo $CLIPS | tr ' ' ',') s, 640x360 25 fps"
  echo
  echo "Efficiency = plain ffmpeg's time for every file, one after the other on one 1.0-CPU host ÷ (wall × CPUs of quota); medians; first = seconds until the first output is finished."
  for c in $CODECS; do
    base=$(awk -F'\t' -v c="$c" '$1==c && $3=="plain" && $7==0 {print $5}' "$TSV" | median)
    echo
    echo "### \`${ARGS[$c]}\` — plain ffmpeg, one file after the other on one 1.0-CPU host: $base s"
    echo
    echo "| hosts (CPU) | method | wall s | efficiency | first output s | frames exact |"
    echo "|---|---|---:|---:|---:|---|"
    for s in $SCENARIOS; do
      for m in $METHODS; do
        w=$(awk -F'\t' -v c="$c" -v s="$s" -v m="$m" '$1==c && $2==s && $3==m && $7==0 {print $5}' "$TSV" | median)
        first=$(awk -F'\t' -v c="$c" -v s="$s" -v m="$m" '$1==c && $2==s && $3==m && $7==0 {print $9}' "$TSV" | median)
        ex=$(awk -F'\t' -v c="$c" -v s="$s" -v m="$m" '$1==c && $2==s && $3==m {print $8; exit}' "$TSV")
        sp=$(ratio "$base" "$w")
        e=$(awk -v sp="$sp" -v cpu="${SC_CPU[$s]}" 'BEGIN{ if (sp==sp+0) printf "%.2f", sp/cpu; else print "n/a"}')
        echo "| ${SC_LABEL[$s]} | $m | $w | **$e** | $first | $ex |"
        printf '%s\t"%s"\t%s\t%s\n' "$c" "${SC_LABEL[$s]}" "$m" "$e" >>"$WORK/batch.dat"
      done
    done
  done
}

plot() {
  command -v gnuplot >/dev/null || { log "no gnuplot: no plot (apt-get install gnuplot-nox)"; return; }
  local n i=0 c j m cols
  n=$(echo $CODECS | wc -w)
  {
    echo "set terminal pngcairo size $((560 * n)),420 font ',10'"
    echo "set output '$WORK/batch.png'"
    echo "set multiplot layout 1,$n title 'A folder of $(echo $CLIPS | wc -w) clips: efficiency against plain ffmpeg on one 1.0-CPU host' font ',11'"
    echo "set style data histograms; set style histogram clustered gap 1; set style fill solid 0.85 border -1"
    echo "set yrange [0:1.2]; set ylabel 'efficiency'; set grid ytics; set key top right"
    for c in $CODECS; do
      i=$((i + 1)); cols=""; j=0
      echo "set title '${ARGS[$c]}'"
      for m in $METHODS; do
        j=$((j + 1))
        awk -F'\t' -v c="$c" -v m="$m" '$1==c && $3==m {print $2 "\t" $4}' "$WORK/batch.dat" >"$WORK/plot-$c-$j.dat"
        cols="$cols${cols:+, }'$WORK/plot-$c-$j.dat' using 2:xtic(1) title '$m'"
      done
      echo "plot $cols, 1 with lines dt 2 lc rgb 'gray' notitle"
    done
    echo "unset multiplot"
  } >"$WORK/batch.gp"
  gnuplot "$WORK/batch.gp" 2>>"$RUN_LOG" && log "plot: $WORK/batch.png"
}

main() {
  setup
  if [ "${REPORT_ONLY:-0}" = 1 ]; then : >"$WORK/batch.dat"; report; plot; return; fi
  : >"$RUN_LOG"; : >"$TSV"; : >"$WORK/batch.dat"
  trap teardown EXIT
  trap 'log interrupted; exit 130' INT TERM
  clips
  hosts_up
  local c s m rep k=0 ms
  for c in $CODECS; do
    one "$c" - plain 1
    for rep in $(seq 1 "$REPS"); do
      for s in $SCENARIOS; do
        read -ra ms <<<"$METHODS"
        for i in $(seq 0 $((${#ms[@]} - 1))); do one "$c" "$s" "${ms[$(( (i + k) % ${#ms[@]} ))]}" "$rep"; done
        k=$((k + 1))
      done
    done
  done
  report
  plot
}

main "$@"; exit $?
