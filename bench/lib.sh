# Shared helpers of the bench/ scripts (sourced, not run).
# Needs: bash >= 5 (EPOCHREALTIME), ffmpeg, ffprobe, awk.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

log() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

need() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || die "$t is not installed (Debian: apt-get install ${PKG_HINT[$t]:-$t})"
  done
}
declare -A PKG_HINT=([ffprobe]=ffmpeg [gnuplot]=gnuplot-nox [ssh]=openssh-client [sshd]=openssh-server [ip]=iproute2 [nsenter]=util-linux [unshare]=util-linux)

# make_clip FILE SECONDS [BITRATE]: 720p25 testsrc2 + 440 Hz sine, h264 + aac,
# a keyframe every 2 s exactly (no scene-cut keyframes). Reused if it exists.
# BITRATE (e.g. 40M) makes a high-bitrate source instead of the default CRF one.
make_clip() {
  local f=$1 secs=$2 rate=${3:-}
  [ -s "$f" ] && return 0
  local q=(-preset veryfast -crf 23)
  [ -n "$rate" ] && q=(-preset ultrafast -b:v "$rate" -maxrate "$rate" -bufsize "$rate")
  log "generating $f ($secs s 720p${rate:+, $rate})"
  mkdir -p "$(dirname "$f")"
  ffmpeg -hide_banner -nostdin -loglevel error -y \
    -f lavfi -i "testsrc2=size=1280x720:rate=25:duration=$secs" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=$secs" \
    -map 0:v -map 1:a -c:v libx264 "${q[@]}" -pix_fmt yuv420p \
    -g 50 -keyint_min 50 -sc_threshold 0 \
    -c:a aac -b:a 128k -movflags +faststart "$f.tmp.mp4" && mv "$f.tmp.mp4" "$f"
}

# frames FILE: decoded video frame count of the first video stream.
frames() {
  ffprobe -v error -select_streams v:0 -count_frames \
    -show_entries stream=nb_read_frames -of default=nw=1:nk=1 "$1" 2>/dev/null | head -1
}

# duration FILE STREAM (v|a): stream duration in seconds (from packets).
stream_duration() {
  ffprobe -v error -select_streams "$2:0" -show_entries stream=duration \
    -of default=nw=1:nk=1 "$1" 2>/dev/null | head -1
}

# Machine-wide CPU busy time in seconds (all CPUs, from /proc/stat).
cpu_busy() {
  local hz; hz=$(getconf CLK_TCK)
  awk -v hz="$hz" '/^cpu /{printf "%.2f\n", ($2+$3+$4+$7+$8+$9)/hz; exit}' /proc/stat
}

# Idle fraction of the machine over one second (0..1).
idle_fraction() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6; exit}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6; exit}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); t=y[1]-x[1]; printf "%.2f\n", (t>0 ? (y[2]-x[2])/t : 1)}'
}

# wait_idle: other people's jobs share this machine; wait (up to IDLE_WAIT
# seconds, default 90) until it is at least 80 % idle before a timed run.
wait_idle() {
  local limit=${IDLE_WAIT:-90} waited=0 f
  while :; do
    f=$(idle_fraction)
    awk -v f="$f" 'BEGIN{exit !(f >= 0.8)}' && return 0
    [ "$waited" -ge "$limit" ] && { log "  (machine still busy: ${f} idle; running anyway)"; return 0; }
    waited=$((waited + 1))
  done
}

# timed OUT_VAR CMD...: run CMD (stdout/stderr to $RUN_LOG), set
# OUT_VAR="wall cpu others rc": wall seconds, CPU seconds of CMD and its
# children (user+sys), CPU seconds other processes of the machine used
# meanwhile (noise indicator), exit status.
timed() {
  local __var=$1; shift
  local t0 b0 t1 b1 rc tf
  tf=$(mktemp)
  b0=$(cpu_busy); t0=$EPOCHREALTIME
  { TIMEFORMAT='%3U %3S'; time "$@" >>"${RUN_LOG:-/dev/null}" 2>&1; } 2>"$tf"
  rc=$?
  t1=$EPOCHREALTIME; b1=$(cpu_busy)
  local cpu
  cpu=$(awk '{printf "%.2f", $1+$2}' "$tf"); rm -f "$tf"
  printf -v "$__var" '%s' "$(awk -v t0="$t0" -v t1="$t1" -v b0="$b0" -v b1="$b1" -v c="$cpu" -v rc="$rc" \
    'BEGIN{o=(b1-b0)-c; if(o<0)o=0; printf "%.3f %.2f %.2f %d", t1-t0, c, o, rc}')"
}

# clean_median FILE COLSPEC...: median of column VAL over the rows of a TSV
# selected by awk condition COND, counting only "clean" runs — those during
# which the rest of the machine used less than CLEAN (default 0.15) CPUs on
# average (column OTHERS ÷ column WALL); all runs when none is clean.
# Prints "median n_clean/n".
clean_median() { # file cond valcol wallcol otherscol
  awk -F'\t' -v v="$3" -v w="$4" -v o="$5" -v lim="${CLEAN:-0.15}" "NR>1 && ($2) {
      n++; all[n]=\$v; if (\$w > 0 && \$o / \$w < lim) { c++; cl[c]=\$v } }
    END {
      if (c) { m=c; for (i=1;i<=c;i++) a[i]=cl[i] } else { m=n; for (i=1;i<=n;i++) a[i]=all[i] }
      for (i=2;i<=m;i++) { x=a[i]; for (j=i-1; j>0 && a[j]>x; j--) a[j+1]=a[j]; a[j+1]=x }
      if (!m) { print \"nan 0/0\"; exit }
      med = (m%2) ? a[(m+1)/2] : (a[m/2]+a[m/2+1])/2
      printf \"%.3f %d/%d\\n\", med, c, n
    }" "$1"
}

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END{if(!NR){print "nan"; exit} if(NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0 && a==a+0 && b==b+0) printf "%.2f", (a/b); else print "n/a"}'; }

find_dffmpeg() {
  DFFMPEG=${DFFMPEG:-$REPO_DIR/target/release/dffmpeg}
  [ -x "$DFFMPEG" ] || die "no dffmpeg binary at $DFFMPEG: run 'cargo build --release' first (or set DFFMPEG=)"
}
