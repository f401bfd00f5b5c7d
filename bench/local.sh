#!/bin/bash
# bench/local.sh — issue 3 benchmark: dffmpeg on the embedded local cluster
# (this machine, one slot per core) vs one plain ffmpeg with the same
# arguments, same machine, same run, alternating order.
#
#   cargo build --release && bench/local.sh
#   QUICK=1 bench/local.sh                  # 20 s clip, 1 repetition
#   CHUNKS="default 15 30" bench/local.sh   # also try dffmpeg --chunk values
#   PROFILE=1 bench/local.sh                # plus one profiled dffmpeg run per variant
#   REPORT_ONLY=1 bench/local.sh            # tables again from the last results
#
# Environment:
#   REPS=3          repetitions (median reported)
#   DURATION=60     clip length in seconds (QUICK=1: 20)
#   SCENARIOS="x264 mpeg4"
#   CHUNKS=default  dffmpeg variants: "default" and/or --chunk seconds
#   PLAIN1=1        also time plain ffmpeg with -threads 1 (decoder and encoder):
#                   the single-threaded baseline the mpeg4 target assumes
#   DFFMPEG=...     binary (default: target/release/dffmpeg of this repo)
#   WORK=/var/tmp/dffmpeg-bench-local   clip, outputs, logs, results.tsv, state/
#   MEMORY=clear     clear dffmpeg's speed memory before each run (keep: keep it)
#   IDLE_WAIT=90    seconds to wait for a quiet machine before each run
#   CLEAN=0.15      a run is "clean" if the rest of the machine used less than
#                   this many CPUs on average meanwhile; medians are taken over
#                   clean runs when there are any (the table says how many)
#
# Prints a Markdown table: median wall seconds of plain ffmpeg and dffmpeg,
# speedup = plain / dffmpeg, median CPU seconds of each (user+sys, children
# included), how many runs were clean, and whether every dffmpeg output has
# exactly the input's frame count. PROFILE=1 replaces ffmpeg/ffprobe by timing
# stand-ins (bench/profile-shim) for one more run per variant and shows where
# the time goes: start-up, split, encode, verify, audio, merge, idle slots.
# Needs: bash >= 5, ffmpeg, ffprobe, awk. Exit status 1 if a frame check fails.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
# (everything runs in functions called on the last line: bash has read the
# whole file before the run starts, so editing it meanwhile is harmless)

declare -A ARGS=(
  [x264]="-c:v libx264 -preset medium -c:a aac"
  [mpeg4]="-c:v mpeg4 -b:v 1M -c:a aac"
)
# Issue 13's targets (the ceiling on 2 cores: ~1.19× x264, ~1.49× mpeg4; see README)
declare -A TARGET=([x264]=1.10 [mpeg4]=1.30)

setup() {
  need ffmpeg ffprobe awk
  QUICK=${QUICK:-0}
  if [ "$QUICK" = 1 ]; then REPS=${REPS:-1}; DURATION=${DURATION:-20}; fi
  REPS=${REPS:-3}
  DURATION=${DURATION:-60}
  SCENARIOS=${SCENARIOS:-"x264 mpeg4"}
  CHUNKS=${CHUNKS:-default}
  IDLE_WAIT=${IDLE_WAIT:-90}
  WORK=${WORK:-/var/tmp/dffmpeg-bench-local}
  mkdir -p "$WORK"
  RUN_LOG=$WORK/runs.log
  RESULTS=$WORK/results.tsv
  CLIP=$WORK/clip-${DURATION}s.mp4
  CORES=$(nproc)
  # dffmpeg's state (its speed memory) lives here: every run a first job
  # (MEMORY=keep: what the runs before measured is kept).
  export XDG_STATE_HOME=$WORK/state
}

variant_cmd() { # variant scenario out
  local v=$1 s=$2 out=$3 chunk=()
  [ "$v" != default ] && chunk=(--chunk "$v")
  [ "${MEMORY:-clear}" = keep ] || rm -rf "$XDG_STATE_HOME"
  # shellcheck disable=SC2086
  "$DFFMPEG" transcode -o "$out" -y --fresh "${chunk[@]}" "$CLIP" ${ARGS[$s]}
}
plain_cmd() { # scenario out [1: single-threaded]
  local t=()
  [ "${3:-}" = 1 ] && t=(-threads 1)
  # shellcheck disable=SC2086
  ffmpeg -hide_banner -nostdin -loglevel error -y "${t[@]}" -i "$CLIP" ${ARGS[$1]} "${t[@]}" "$2"
}

runs() {
  local rep s v order out r wall cpu others rc n
  BAD=0
  for rep in $(seq 1 "$REPS"); do
    for s in $SCENARIOS; do
      [ -n "${ARGS[$s]:-}" ] || die "unknown scenario $s (known: ${!ARGS[*]})"
      # Alternate the order: odd repetitions start with plain ffmpeg, even
      # ones with dffmpeg (and plain runs last).
      order=(plain)
      [ "${PLAIN1:-0}" = 1 ] && order+=(plain1)
      for v in $CHUNKS; do order+=("$v"); done
      if [ $((rep % 2)) = 0 ]; then order=("${order[@]:1}" plain); fi
      for v in "${order[@]}"; do
        out=$WORK/out-$s-$v.mp4
        rm -f "$out"
        wait_idle
        echo "== $s $v rep $rep" >>"$RUN_LOG"
        case $v in
          plain) timed r plain_cmd "$s" "$out" ;;
          plain1) timed r plain_cmd "$s" "$out" 1 ;;
          *) timed r variant_cmd "$v" "$s" "$out" ;;
        esac
        read -r wall cpu others rc <<<"$r"
        n=0; [ "$rc" = 0 ] && n=$(frames "$out")
        case $v in plain*) ;; *) [ "$n" = "$IN_FRAMES" ] || BAD=1 ;; esac
        log "  $s $(printf '%-8s' "$v") rep $rep: ${wall}s wall, ${cpu}s CPU, others ${others}s CPU, rc $rc, $n/$IN_FRAMES frames"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$v" "$rep" "$wall" "$cpu" "$others" "$rc" "$n" >>"$RESULTS"
      done
    done
  done
}

cm() { # scenario variant column -> "median clean/total" over successful runs
  clean_median "$RESULTS" "\$1==\"$1\" && \$2==\"$2\" && \$7==0" "$3" 4 6
}

report() {
  local s v pw pc dw dc p1w p1c ok label nrep frames dur
  frames=$(awk -F'\t' 'NR>1 && $2=="plain" {print $8; exit}' "$RESULTS")
  nrep=$(awk -F'\t' 'NR>1 {if ($3>m) m=$3} END{print m+0}' "$RESULTS")
  dur=$(awk -v f="$frames" 'BEGIN{printf "%.0f", f/25}')
  echo
  echo "Local cluster vs plain ffmpeg — $(date -u +%F), $CORES cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(ffmpeg -version | head -1 | cut -d' ' -f1,3), ${dur} s 720p25 clip ($frames frames, h264 + aac, keyframe every 2 s), $nrep repetitions, alternating order"
  echo
  echo "| scenario | dffmpeg | plain median s | dffmpeg median s | speedup (plain/dffmpeg) | target | plain CPU s | dffmpeg CPU s | clean runs (plain, dffmpeg) | frames exact |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|---|"
  for s in $SCENARIOS; do
    read -r pw pn <<<"$(cm "$s" plain 4)"; read -r pc _ <<<"$(cm "$s" plain 5)"
    for v in $CHUNKS; do
      read -r dw dn <<<"$(cm "$s" "$v" 4)"; read -r dc _ <<<"$(cm "$s" "$v" 5)"
      ok=$(awk -F'\t' -v s="$s" -v v="$v" -v n="$frames" 'NR>1 && $1==s && $2==v {t++; if ($7==0 && $8==n) g++} END{printf "%d/%d", g, t}' "$RESULTS")
      label=$([ "$v" = default ] && echo "default chunk" || echo "--chunk $v")
      printf '| %s `%s` | %s | %s | %s | **%s×** | ≥ %s× | %s | %s | %s, %s | %s |\n' \
        "$s" "${ARGS[$s]}" "$label" "$pw" "$dw" "$(ratio "$pw" "$dw")" "${TARGET[$s]}" "$pc" "$dc" "$pn" "$dn" "$ok"
    done
    if awk -F'\t' -v s="$s" 'NR>1 && $1==s && $2=="plain1" {f=1} END{exit !f}' "$RESULTS"; then
      read -r p1w p1n <<<"$(cm "$s" plain1 4)"; read -r p1c _ <<<"$(cm "$s" plain1 5)"
      for v in $CHUNKS; do
        read -r dw dn <<<"$(cm "$s" "$v" 4)"; read -r dc _ <<<"$(cm "$s" "$v" 5)"
        label=$([ "$v" = default ] && echo "default chunk" || echo "--chunk $v")
        printf '| %s vs plain `-threads 1` | %s | %s | %s | %s× | | %s | %s | %s, %s | |\n' \
          "$s" "$label" "$p1w" "$dw" "$(ratio "$p1w" "$dw")" "$p1c" "$dc" "$p1n" "$dn"
      done
    fi
  done
  echo
  echo "(median over the clean runs — the rest of the machine used < ${CLEAN:-0.15} CPU meanwhile — or over all runs when none was clean; CPU s = user + sys of the command and its children; raw runs: $RESULTS)"
  # The ceiling: the single-threaded work (decode + encode + audio, no
  # threading overhead) spread perfectly over every core, nothing added.
  for s in $SCENARIOS; do
    awk -F'\t' -v s="$s" 'NR>1 && $1==s && $2=="plain1" {f=1} END{exit !f}' "$RESULTS" || continue
    read -r pw _ <<<"$(cm "$s" plain 4)"; read -r p1c _ <<<"$(cm "$s" plain1 5)"
    awk -v s="$s" -v pw="$pw" -v c="$p1c" -v n="$CORES" 'BEGIN {
      printf "\nCeiling, %s: the single-threaded run does %.2f CPU-s of work; split perfectly over %d cores with no overhead it would take %.2f s, so no chunked transcoder can beat plain ffmpeg (%.2f s, which threads its decoder) by more than %.2f× here.\n", s, c, n, c/n, pw, pw/(c/n) }'
  done
}

# PROFILE=1: where dffmpeg's time goes, per pipeline step (one extra run
# per variant with ffmpeg/ffprobe replaced by timing stand-ins).
profile() {
  local s v out t0 t1 r n
  export SHIM_REAL_FFMPEG SHIM_REAL_FFPROBE SHIM_LOG
  SHIM_REAL_FFMPEG=$(command -v ffmpeg); SHIM_REAL_FFPROBE=$(command -v ffprobe)
  for s in $SCENARIOS; do
    for v in $CHUNKS; do
      SHIM_LOG=$WORK/profile-$s-$v.log; : >"$SHIM_LOG"
      out=$WORK/out-$s-$v.mp4; rm -f "$out"
      wait_idle
      t0=$EPOCHREALTIME
      PATH="$BENCH_DIR/profile-shim:$PATH" timed r variant_cmd "$v" "$s" "$out"
      t1=$EPOCHREALTIME
      echo
      echo "Profile: $s, $( [ "$v" = default ] && echo "default chunk" || echo "--chunk $v"), $CORES slots — wall, CPU, others' CPU, rc: $r"
      awk -v t0="$t0" -v t1="$t1" -v slots="$CORES" '
        { k=$1; s=$2-t0; e=$3-t0; n[k]++; w[k]+=e-s; u[k]+=$4+$5
          if (k=="encode") { if (!fs || s<fs) fs=s; if (e>le) le=e; enc[++ne]=e } }
        END {
          total=t1-t0
          printf "  %-13s %3s %9s %9s\n", "step", "n", "wall s", "CPU s"
          for (k in n) printf "  %-13s %3d %9.2f %9.2f\n", k, n[k], w[k], u[k]
          # slot finishing times: the last `slots` encode ends
          for (i=2; i<=ne; i++) { x=enc[i]; for (j=i-1; j>0 && enc[j]>x; j--) enc[j+1]=enc[j]; enc[j+1]=x }
          idle=0
          for (i=ne; i>ne-slots && i>0; i--) idle+=le-enc[i]
          cap=slots*(le-fs)
          printf "  start-up before the first encode     : %.2f s\n", fs
          printf "  encode phase (first start..last end)  : %.2f s; slot utilisation %.0f%% (encodes busy %.1f of %.1f slot-s)\n", le-fs, (cap>0 ? 100*w["encode"]/cap : 0), w["encode"], cap
          printf "  idle slot time at the end             : %.2f slot-s\n", idle
          printf "  after the last encode (verify, merge) : %.2f s\n", total-le
          printf "  total                                 : %.2f s\n", total
        }' "$SHIM_LOG"
      n=$(frames "$out"); echo "  frames: $n/$IN_FRAMES"
    done
  done
  echo
  echo "(encode includes the 1-frame preflight on the controller; ffmpeg-other: -version and codec queries)"
}

main() {
  setup
  if [ "${REPORT_ONLY:-0}" = 1 ]; then
    [ -s "$RESULTS" ] || die "no $RESULTS to report"
    report
    return 0
  fi
  find_dffmpeg
  : >"$RUN_LOG"
  printf 'scenario\tvariant\trep\twall_s\tcpu_s\tothers_cpu_s\trc\tframes\n' >"$RESULTS"
  make_clip "$CLIP" "$DURATION" || die "cannot generate the clip"
  IN_FRAMES=$(frames "$CLIP")
  log "clip: $CLIP ($DURATION s, $IN_FRAMES frames); $CORES cores; dffmpeg: $DFFMPEG; $REPS repetition(s)"
  runs
  report
  [ "${PROFILE:-0}" = 1 ] && profile
  return $BAD
}

main "$@"; exit $?
