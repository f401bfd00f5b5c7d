#!/bin/bash
# bench/scaling.sh — issue 6: how well dffmpeg uses a cluster, against one
# plain ffmpeg and against the original static-split algorithm
# (bench/original.sh), all measured in the same run on test hosts with CPU
# quotas (network namespaces + overlay roots + own sshd + cgroup v1 quota,
# made by lab.sh).
#
#   cargo build --release
#   apt-get install gnuplot-nox          # for the PNG plot (the table works without)
#   bench/scaling.sh                     # full run: 60 s clip, ~17 min on 2 idle cores
#   QUICK=1 bench/scaling.sh             # 20 s clip, no transfer test: a few minutes
#
# Needs root (namespaces, mounts, cgroups), ffmpeg, ffprobe, bc, ssh, sshd,
# iproute2, util-linux; the test hosts come from bench/lab.sh (LAB_SH to use
# another script with the same commands).
#
# Hosts: n1 n2 n3 with 1.0 CPU each, half (0.5 CPU), quarter (0.25 CPU), on
# bridge LAB_BR with addresses LAB_NET.x (nothing is routed anywhere); one
# shared directory of this machine is bound into every host at the same
# path (the NFS stand-in: this kernel has no NFS). Root's key for the hosts
# is generated under LAB_DIR. Every host is removed at exit (trap).
#
# Scenarios, for libx264 -preset medium and for mpeg4 -b:v 1M (+ aac):
#   baseline  one plain ffmpeg on n1 (1.0 CPU) — run before and after each
#             codec's scenarios, the median is the reference
#   1×1.0     n1                      2×1.0   n1 n2
#   3×1.0     n1 n2 n3 — 3 CPUs of quota on a 2-core machine: the quotas do
#             not bind, the point shows oversubscription (efficiency is given
#             against the 3 nominal CPUs and against the 2 real cores)
#   het       n1 + half + quarter = 1.75 CPU (original: weights 4,2,1)
# Each in two modes of the hosts (QUOTAS): "visible", the quota shows inside
# the host as in a container; "hidden", it binds but does not show — the
# host sees this machine's cores and only measuring tells its speed, as on
# a real Raspberry Pi (scenarios with "-h"). dffmpeg's speed memory is
# cleared before every run (the first job on a cluster: the worst case)
# unless MEMORY=keep.
# Methods per scenario (order rotated between scenarios):
#   original     bench/original.sh (static split, output seeking, per-part audio)
#   dffmpeg-ssh  dffmpeg transcode -I inventory (cluster.storage: ssh)
#   dffmpeg-nfs  the same with storage: nfs (the shared dir, controller = storage)
# Then, unless TRANSFER=0, the transfer cost of storage ssh vs nfs for a
# high-bitrate source (raw stream into a host, and dffmpeg end to end).
#
# Environment:
#   QUICK=1          20 s clip, 1 repetition, TRANSFER=0
#   REPS=2           repetitions of every scenario (baseline: REPS+1 runs)
#   DURATION=60      clip seconds
#   CODECS="x264 mpeg4"   SCENARIOS="1x1 2x1 3x1 het"   QUOTAS="visible hidden"
#   MEMORY=clear     clear dffmpeg's speed memory before each run (keep: don't)
#   METHODS="original dffmpeg-ssh dffmpeg-nfs"   (drop the dffmpeg ones for a
#                    dffmpeg build without distributed mode)
#   DFFMPEG=...      binary (default target/release/dffmpeg)
#   CHUNK=           pass --chunk CHUNK to dffmpeg (default: dffmpeg's own choice)
#   REPORT_ONLY=1    no runs: print the tables and the plot from $WORK/scaling.tsv
#   WORK=/var/tmp/dffmpeg-bench-scaling    clip, shared dir, results, plot
#   LAB_DIR=/var/tmp/dlab-bench LAB_BR=br-dlbench LAB_NET=198.18.50 LAB_NS=dlbench
#   IDLE_WAIT=30     seconds to wait for a quiet machine before each run
#   SLOTS=auto       dffmpeg slots per host: auto = dffmpeg's own choice (its
#                    cores capped by the CPU quota it reads from its cgroup);
#                    quota = the quota rounded, at least 1, written in the
#                    inventory; N = N slots everywhere
#   CONTROLLER_CPU=  a CPU quota for the controller (dffmpeg and every process
#                    it starts here, in a cgroup v1 cpu group of its own), e.g.
#                    0.25: a weak controller such as the blog's Pi, whose own
#                    work then costs time, as on a real cluster (default: none;
#                    the controller shares this machine's cores with the hosts)
#
# Output: Markdown tables on stdout, $WORK/scaling.tsv (every run),
# $WORK/scaling.png (plot), $WORK/runs.log (every command's output),
# $WORK/json/*.jsonl (dffmpeg's --json events, time-stamped).
# The machine may be shared: before each run the script waits (IDLE_WAIT) for
# it to be quiet, and records the CPU others used during each run; tables show
# the median and the best run (contention only ever adds time).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
# (the work is in functions, called at the very end: bash reads the whole
# file first, so editing it during a run cannot derail the run)
setup() {
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, mounts, cgroups)"
need ffmpeg ffprobe bc ssh ssh-keygen ip nsenter unshare

export LAB_DIR=${LAB_DIR:-/var/tmp/dlab-bench} LAB_BR=${LAB_BR:-br-dlbench}
export LAB_NET=${LAB_NET:-198.18.50} LAB_NS=${LAB_NS:-dlbench}
LAB_SH=${LAB_SH:-$BENCH_DIR/lab.sh}
[ -x "$LAB_SH" ] || die "lab.sh not found at $LAB_SH (set LAB_SH=)"
LAB_SH=$(cd "$(dirname "$LAB_SH")" && pwd)/$(basename "$LAB_SH")

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then DURATION=${DURATION:-20}; REPS=${REPS:-1}; TRANSFER=${TRANSFER:-0}; fi
DURATION=${DURATION:-60} REPS=${REPS:-2} TRANSFER=${TRANSFER:-1}
CODECS=${CODECS:-"x264 mpeg4"}
SCENARIOS=${SCENARIOS:-"1x1 2x1 3x1 het"}
QUOTAS=${QUOTAS:-"visible hidden"}
MEMORY=${MEMORY:-clear}
METHODS=${METHODS:-"original dffmpeg-ssh dffmpeg-nfs"}
IDLE_WAIT=${IDLE_WAIT:-30}
SLOTS=${SLOTS:-auto}
case " $METHODS " in *" dffmpeg-"*) find_dffmpeg ;; esac

WORK=${WORK:-/var/tmp/dffmpeg-bench-scaling}
SHARED=$WORK/shared
KEY=$LAB_DIR/id_ed25519
export DFFMPEG_KNOWN_HOSTS=$WORK/known_hosts
# dffmpeg's state (its speed memory) lives here during the bench.
export XDG_STATE_HOME=$WORK/state
mkdir -p "$WORK/json" "$SHARED"/{media,out} "$LAB_DIR"
RUN_LOG=$WORK/runs.log
TSV=$WORK/scaling.tsv
CORES=$(nproc)
CLIP=$SHARED/media/clip-${DURATION}s.mp4
}
new_results() {
: >"$RUN_LOG"
printf 'codec\tscenario\tmethod\trep\twall_s\tcontroller_cpu_s\thosts_cpu_s\tothers_cpu_s\trc\tframes\tin_frames\toverhead_s\tnote\n' >"$TSV"
}
declare -gA ARGS=(
  [x264]="-c:v libx264 -preset medium -c:a aac"
  [mpeg4]="-c:v mpeg4 -b:v 1M -c:a aac"
  [hb]="-c:v mpeg4 -q:v 5 -c:a aac"
)
declare -gA SC_HOSTS=([1x1]="n1" [2x1]="n1 n2" [3x1]="n1 n2 n3" [het]="n1 half quarter")
declare -gA SC_WEIGHTS=([1x1]="1" [2x1]="1,1" [3x1]="1,1,1" [het]="4,2,1")
declare -gA SC_CPU=([1x1]=1 [2x1]=2 [3x1]=3 [het]=1.75)
declare -gA SC_LABEL=([1x1]="1 × 1.0" [2x1]="2 × 1.0" [3x1]="3 × 1.0 (on 2 cores)" [het]="1.0 + 0.5 + 0.25")
declare -gA HOST_CPU=([n1]=1 [n2]=1 [n3]=1 [half]=0.5 [quarter]=0.25)
# The same scenarios with the quota hidden inside the hosts: "-h".
for _s in 1x1 2x1 3x1 het; do
  SC_HOSTS[$_s-h]=${SC_HOSTS[$_s]}; SC_WEIGHTS[$_s-h]=${SC_WEIGHTS[$_s]}; SC_CPU[$_s-h]=${SC_CPU[$_s]}
  SC_LABEL[$_s-h]="${SC_LABEL[$_s]}, quota hidden"
done
unset _s
declare -gA IP

# ---- test hosts ----------------------------------------------------------
teardown() {
  local h
  "$LAB_SH" down >/dev/null 2>&1 || true
  for h in "${!HOST_CPU[@]}"; do rmdir "/sys/fs/cgroup/cpuacct/$LAB_NS-$h" 2>/dev/null || true; done
  rmdir "/sys/fs/cgroup/cpu/$LAB_NS-controller" 2>/dev/null || true
}
hosts_up() { # quota mode: visible | hidden
  teardown   # leftovers of an earlier run of this script (same LAB_DIR/LAB_NS only)
  export LAB_QUOTA=${1:-visible}
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C dffmpeg-bench -f "$KEY" || die "ssh-keygen failed"
  rm -f "$DFFMPEG_KNOWN_HOSTS"
  local spec=() h
  for h in n1 n2 n3 half quarter; do spec+=("$h:${HOST_CPU[$h]}"); done
  "$LAB_SH" up "${spec[@]}" >>"$RUN_LOG" 2>&1 || die "lab.sh up failed (see $RUN_LOG)"
  for h in n1 n2 n3 half quarter; do
    IP[$h]=$("$LAB_SH" ip "$h")
    case ${IP[$h]} in "$LAB_NET".*) ;; *) die "host $h has address ${IP[$h]}, not in $LAB_NET.0/24" ;; esac
    # root's key into the host's own /root (its overlay), the shared dir bound in
    "$LAB_SH" exec "$h" sh -c 'umask 077; mkdir -p /root/.ssh; cat >> /root/.ssh/authorized_keys' <"$KEY.pub"
    "$LAB_SH" share "$h" "$SHARED" "$SHARED"
    # CPU accounting per host: the host's sshd (and all it starts) into a cpuacct group
    local cg=/sys/fs/cgroup/cpuacct/$LAB_NS-$h
    mkdir -p "$cg" && cat "$LAB_DIR/hosts/$h/pid" >"$cg/cgroup.procs" 2>/dev/null || true
    hssh "$h" "ffmpeg -version >/dev/null && test -d $(printf %q "$SHARED/media")" \
      || die "host $h: no ssh, ffmpeg or shared dir"
  done
  log "hosts ($LAB_QUOTA quota): $(for h in n1 n2 n3 half quarter; do printf '%s=%s(%s CPU) ' "$h" "${IP[$h]}" "${HOST_CPU[$h]}"; done)"
}
SSH_OPTS=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o IdentitiesOnly=yes)
hssh() { local h=$1; shift; ssh -n "${SSH_OPTS[@]}" -i "$KEY" "root@${IP[$h]}" "$@"; }

hosts_cpu() { # total CPU seconds used so far by all test hosts
  local h t=0 u
  for h in "${!HOST_CPU[@]}"; do
    u=$(cat "/sys/fs/cgroup/cpuacct/$LAB_NS-$h/cpuacct.usage" 2>/dev/null || echo 0)
    t=$((t + u))
  done
  awk -v t="$t" 'BEGIN{printf "%.2f", t/1e9}'
}

inventory() { # storage hosts... -> path
  local storage=$1; shift
  local f=$WORK/inventory-$storage-$(echo "$@" | tr ' ' '-').yaml h
  {
    echo "# generated by bench/scaling.sh"
    echo "cluster:"
    echo "  storage: $storage"
    echo "  shared_dir: \"$SHARED\""
    echo "nodes:"
    if [ "$storage" = nfs ]; then
      echo "  controller: { host: local, roles: [controller, storage] }"
    else
      echo "  controller: { host: local, roles: [controller] }"
    fi
    for h in "$@"; do
      local slots=""
      case $SLOTS in
        auto) ;;
        quota) slots=" slots: $(awk -v q="${HOST_CPU[$h]}" 'BEGIN{n=int(q+0.5); print (n<1 ? 1 : n)}'),";;
        *) slots=" slots: $SLOTS," ;;
      esac
      echo "  $h: { host: ${IP[$h]}, user: root, roles: [compute],$slots identity_file: \"$KEY\" }"
    done
  } >"$f"
  echo "$f"
}

stamp() { local l; while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done; }

# ---- one run of each method ---------------------------------------------
# Each sets R="wall controller_cpu hosts_cpu others rc frames overhead note".
run_measured() { # outfile cmd...
  local h0 h1 r
  h0=$(hosts_cpu)
  wait_idle
  timed r "${@:2}"
  h1=$(hosts_cpu)
  read -r wall cpu others rc <<<"$r"
  hc=$(awk -v a="$h0" -v b="$h1" 'BEGIN{printf "%.2f", b-a}')
  # the hosts' CPU also shows up as "others" on the machine: take it out
  others=$(awk -v o="$others" -v h="$hc" 'BEGIN{o-=h; if (o<0) o=0; printf "%.2f", o}')
  n=0; [ "$rc" = 0 ] && n=$(frames "$1")
}

plain_on() { # host codec out
  # shellcheck disable=SC2086
  hssh "$1" "ffmpeg -nostdin -loglevel error -y -i $(printf %q "$CLIP") ${ARGS[$2]} $(printf %q "$3")"
}
original_on() { # scenario codec out
  local ips=() h
  for h in ${SC_HOSTS[$1]}; do ips+=("${IP[$h]}"); done
  # shellcheck disable=SC2086
  CHECK=0 SSH_KEY=$KEY "$BENCH_DIR/original.sh" -H "$(IFS=,; echo "${ips[*]}")" -w "${SC_WEIGHTS[$1]}" \
    -d "$SHARED/original" "$CLIP" "$3" ${ARGS[$2]} >"$WORK/original.last" 2>&1
  local rc=$?; cat "$WORK/original.last"; return $rc
}
dffmpeg_on() { # scenario codec out storage
  local inv
  # shellcheck disable=SC2086
  inv=$(inventory "$4" ${SC_HOSTS[$1]})
  echo "$EPOCHREALTIME start" >"$WORK/dffmpeg.last"
  [ "$MEMORY" = keep ] || rm -rf "$XDG_STATE_HOME"
  # shellcheck disable=SC2086
  local chunk=()
  [ -n "${CHUNK:-}" ] && chunk=(--chunk "$CHUNK")
  (
    controller_quota
    "$DFFMPEG" transcode -I "$inv" --json --fresh -y -o "$3" "${chunk[@]}" "$CLIP" ${ARGS[$2]}
  ) | stamp >>"$WORK/dffmpeg.last"
}
# With CONTROLLER_CPU: this (sub)shell and all it starts into a cpu cgroup
# with that quota.
controller_quota() {
  [ -n "${CONTROLLER_CPU:-}" ] || return 0
  local cg=/sys/fs/cgroup/cpu/$LAB_NS-controller
  mkdir -p "$cg" && echo 100000 >"$cg/cpu.cfs_period_us" &&
    awk -v c="$CONTROLLER_CPU" 'BEGIN { printf "%d\n", c * 100000 }' >"$cg/cpu.cfs_quota_us" &&
    echo "$BASHPID" >"$cg/cgroup.procs" || die "cannot limit the controller to $CONTROLLER_CPU CPU"
}
dffmpeg_overhead() { # seconds before the first chunk starts + after the last chunk is done
  awk '
    NR==1 { t0=$1 }
    /"event":"chunk_start"/ { if (!first) first=$1 }
    /"event":"chunk_done"/  { last=$1 }
    /"event":"job_done"/    { done=$1 }
    END { if (first && done) printf "%.2f", (first-t0)+(done-last); else print "" }' "$WORK/dffmpeg.last"
}

record() { # codec scenario method rep note
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$wall" "$cpu" "$hc" "$others" "$rc" "$n" "$IN_FRAMES" "${ovh:-}" "${5:-}" >>"$TSV"
  log "  $(printf '%-6s %-4s %-12s' "$1" "$2" "$3") rep $4: ${wall}s (controller ${cpu}s CPU, hosts ${hc}s, others ${others}s) rc $rc frames $n/$IN_FRAMES ${ovh:+overhead ${ovh}s }${5:-}"
}

one() { # codec scenario method rep
  local c=$1 s=$2 m=$3 out=$SHARED/out/$1-$2-$3.mp4 note="" t0
  rm -f "$out"; ovh=""
  echo "== $c $s $m rep $4" >>"$RUN_LOG"
  case $m in
    baseline) run_measured "$out" plain_on n1 "$c" "$out" ;;
    original)
      run_measured "$out" original_on "$s" "$c" "$out"
      [ "$rc" = 0 ] && note="audio $(stream_duration "$out" a)/$IN_AUDIO s" ;;
    dffmpeg-ssh|dffmpeg-nfs)
      run_measured "$out" dffmpeg_on "$s" "$c" "$out" "${m#dffmpeg-}"
      cp "$WORK/dffmpeg.last" "$WORK/json/$c-$s-$m-$4.jsonl"
      ovh=$(dffmpeg_overhead)
      [ "$rc" = 0 ] || note="failed: $(grep -m1 -o '"error":"[^"]*' "$WORK/dffmpeg.last" | cut -c10-120)" ;;
  esac
  record "$c" "$s" "$m" "$4" "$note"
}

# ---- the run ---------------------------------------------------------------
scenarios() { # quota mode: visible (scenarios as named) | hidden ("-h")
  local k=0 c rep s i ms n_m key
  for c in $CODECS; do
    for rep in $(seq 1 "$REPS"); do
      one "$c" - baseline "$rep"
      for s in $SCENARIOS; do
        key=$s; [ "$1" = hidden ] && key=$s-h
        ms=($METHODS); n_m=${#ms[@]}
        for i in $(seq 0 $((n_m - 1))); do
          one "$c" "$key" "${ms[$(( (i + k) % n_m ))]}" "$rep"
        done
        k=$((k + 1))
      done
    done
    one "$c" - baseline "$((REPS + 1))"
  done
}

# Every scenario name of the run, in order (for the tables).
all_scenarios() {
  local q s
  for q in $QUOTAS; do for s in $SCENARIOS; do [ "$q" = hidden ] && echo "$s-h" || echo "$s"; done; done
}

# ---- tables ----------------------------------------------------------------
# values of one column for codec/scenario/method (successful runs)
vals() { awk -F'\t' -v c="$1" -v s="$2" -v m="$3" -v k="$4" 'NR>1 && $1==c && $2==s && $3==m && $9==0 {print $k}' "$TSV"; }
# median over the clean runs (see lib.sh clean_median), all runs if none is clean
med() { clean_median "$TSV" "\$1==\"$1\" && \$2==\"$2\" && \$3==\"$3\" && \$9==0" "$4" 5 8 | cut -d' ' -f1; }
nclean() { clean_median "$TSV" "\$1==\"$1\" && \$2==\"$2\" && \$3==\"$3\" && \$9==0" 5 5 8 | cut -d' ' -f2; }
best() { vals "$@" | sort -g | head -1; }
exact() {
  awk -F'\t' -v c="$1" -v s="$2" -v m="$3" 'NR>1 && $1==c && $2==s && $3==m {t++; if ($9==0 && $10==$11) g++} END{printf "%d/%d", g, t}' "$TSV"
}
eff() { awk -v sp="$1" -v cpu="$2" 'BEGIN{ if (sp==sp+0 && cpu>0) printf "%.2f", sp/cpu; else print "n/a"}'; }

report() {
  local c s m base bbase w bw sp bsp e be cpu work o ovs note oth dur frames
  DAT=$WORK/scaling.dat; : >"$DAT"
  frames=$(awk -F'\t' 'NR==2{print $11}' "$TSV")
  dur=$(awk -v f="$frames" 'BEGIN{printf "%.0f", f/25}')
  echo
  echo "## Scaling on test hosts — $(date -u +%F), ${dur} s 720p25 clip ($frames frames), $CORES-core machine, $(ffmpeg -version | head -1 | cut -d' ' -f1,3)"
  echo
  echo "Speedup = plain ffmpeg on one 1.0-CPU host ÷ wall time; efficiency = speedup ÷ CPUs of quota (3 × 1.0: also ÷ the $CORES real cores)."
  echo "Median over the clean runs (the rest of the machine used < ${CLEAN:-0.15} CPU meanwhile; all runs if none was), and in brackets the best run against the best baseline (contention from other jobs only adds time)."
  echo "CPU work = CPU seconds of the test hosts plus the controller's (dffmpeg / original.sh and their children on this machine) ÷ the baseline's."
  for c in $CODECS; do
    base=$(med "$c" - baseline 5); bbase=$(best "$c" - baseline 5)
    echo
    echo "### \`${ARGS[$c]}\` — baseline $base s [best $bbase s] (plain ffmpeg, one 1.0-CPU host, clean runs $(nclean "$c" - baseline))"
    echo
    echo "| hosts (CPU) | method | wall s | speedup | efficiency | CPU work | frames exact | dffmpeg overhead | clean runs | notes |"
    echo "|---|---|---:|---:|---:|---:|---|---:|---:|---|"
    for s in $(all_scenarios); do
      for m in $METHODS; do
        w=$(med "$c" "$s" "$m" 5); bw=$(best "$c" "$s" "$m" 5)
        [ "$w" = nan ] && { echo "| ${SC_LABEL[$s]} | $m | failed | | | | $(exact "$c" "$s" "$m") | | | $(awk -F'\t' -v c="$c" -v s="$s" -v m="$m" 'NR>1 && $1==c && $2==s && $3==m {n=$13} END{print n}' "$TSV") |"; continue; }
        sp=$(ratio "$base" "$w"); bsp=$(ratio "$bbase" "$bw")
        e="$(eff "$sp" "${SC_CPU[$s]}") [$(eff "$bsp" "${SC_CPU[$s]}")]"
        case $s in 3x1*) e="$e; ÷$CORES: $(eff "$sp" "$CORES")" ;; esac
        cpu=$(awk -F'\t' -v c="$c" -v s="$s" -v m="$m" 'NR>1 && $1==c && $2==s && $3==m && $9==0 {print $6+$7}' "$TSV" | median)
        work=$(ratio "$cpu" "$(med "$c" - baseline 7)")
        ovs="—"
        case $m in dffmpeg-*) o=$(med "$c" "$s" "$m" 12) ;; *) o=nan ;; esac
        [ "$o" != nan ] && [ -n "$o" ] && ovs=$(awk -v o="$o" -v w="$w" 'BEGIN{printf "%.1f s (%.0f %%)", o, 100*o/w}')
        oth=$(nclean "$c" "$s" "$m")
        note=$(awk -F'\t' -v c="$c" -v s="$s" -v m="$m" 'NR>1 && $1==c && $2==s && $3==m && $13!="" {print $13; exit}' "$TSV")
        echo "| ${SC_LABEL[$s]} | $m | $w [$bw] | $sp [$bsp] | $e | ${work}× | $(exact "$c" "$s" "$m") | $ovs | $oth | $note |"
        printf '%s\t"%s"\t%s\t%s\t%s\n' "$c" "${SC_LABEL[$s]}" "$m" "$sp" "$(eff "$sp" "${SC_CPU[$s]}" | sed 's,n/a,0,')" >>"$DAT"
      done
    done
  done
  echo
  echo "(frames exact: runs whose output has exactly the input's frame count; dffmpeg overhead: its time before the first chunk starts plus after the last chunk is done — connect, facts, probe, preflight; verify, merge; audio: output/input audio seconds. Raw runs: $TSV)"
}

# ---- plot ------------------------------------------------------------------
plot() {
  command -v gnuplot >/dev/null || { log "no gnuplot: skipping the plot (apt-get install gnuplot-nox)"; return; }
  local png=${PLOT:-$WORK/scaling.png} c i=0 n cols m j dur
  n=$(echo $CODECS | wc -w)
  dur=$(awk -F'\t' 'NR==2{printf "%.0f", $11/25}' "$TSV")
  {
    echo "set terminal pngcairo size $((640 * n)),480 font ',10'"
    echo "set output '$png'"
    echo "set multiplot layout 1,$n title 'Parallel efficiency = speedup over one plain ffmpeg on a 1.0-CPU host ÷ CPUs  (${dur} s 720p clip, median)' font ',11'"
    echo "set style data histograms; set style histogram clustered gap 1; set style fill solid 0.85 border -1"
    echo "set yrange [0:1.3]; set ylabel 'parallel efficiency'; set grid ytics; set key top right"
    echo "set xtics rotate by -30"
    for c in $CODECS; do
      i=$((i + 1))
      echo "set title '${ARGS[$c]}'"
      cols=""; j=0
      for m in $METHODS; do
        j=$((j + 1))
        awk -F'\t' -v c="$c" -v m="$m" '$1==c && $3==m {print $2 "\t" $5}' "$DAT" >"$WORK/plot-$c-$j.dat"
        cols="$cols${cols:+, }'$WORK/plot-$c-$j.dat' using 2:xtic(1) title '$m'"
      done
      echo "plot $cols, 1 with lines dt 2 lc rgb 'gray' notitle"
    done
    echo "unset multiplot"
  } >"$WORK/scaling.gp"
  gnuplot "$WORK/scaling.gp" 2>>"$RUN_LOG" && log "plot: $png"
}

# ---- transfer cost: storage ssh vs nfs -------------------------------------
transfer() {
  local HB=$SHARED/media/highrate-20s.mp4 size mb mbps what h0 h1 label st rep out w cc hcm r
  if [ ! -s "$HB" ]; then
    log "generating $HB (high-bitrate source)"
    ffmpeg -hide_banner -nostdin -loglevel error -y \
      -f lavfi -i "testsrc2=size=1280x720:rate=25:duration=20" -f lavfi -i "sine=duration=20:sample_rate=48000" \
      -vf "noise=alls=24:allf=t" -c:v libx264 -preset ultrafast -qp 14 -g 50 -keyint_min 50 -sc_threshold 0 \
      -pix_fmt yuv420p -c:a aac -b:a 128k "$HB.tmp.mp4" && mv "$HB.tmp.mp4" "$HB"
  fi
  size=$(stat -c %s "$HB"); mb=$(awk -v s="$size" 'BEGIN{printf "%.0f", s/1e6}')
  mbps=$(awk -v s="$size" 'BEGIN{printf "%.0f", s*8/20/1e6}')
  IN_FRAMES=$(frames "$HB"); CLIP=$HB
  echo
  echo "### Transfer cost, storage ssh vs nfs — high-bitrate source: 20 s 720p, $mb MB ($mbps Mbit/s)"
  echo
  echo "| what | wall s | MB/s | controller CPU s | hosts CPU s | frames exact |"
  echo "|---|---:|---:|---:|---:|---|"
  streamit() { ssh "${SSH_OPTS[@]}" -i "$KEY" "root@${IP[n1]}" 'cat >/dev/null' <"$HB"; }
  readit() { hssh n1 "cat $(printf %q "$HB") >/dev/null"; }
  for what in stream read; do
    h0=$(hosts_cpu); wait_idle
    if [ $what = stream ]; then timed r streamit; else timed r readit; fi
    h1=$(hosts_cpu); read -r wall cpu others rc <<<"$r"
    if [ $what = stream ]; then label="raw: the file streamed into a 1.0-CPU host over ssh (cat)"
    else label="raw: the host reads it from the shared dir (the nfs stand-in is a bind mount: no network)"; fi
    echo "| $label | $wall | $(awk -v s="$size" -v w="$wall" 'BEGIN{printf "%.0f", s/1e6/w}') | $cpu | $(awk -v a="$h0" -v b="$h1" 'BEGIN{printf "%.2f", b-a}') | |"
  done
  for st in ssh nfs; do
    for rep in 1 2; do
      out=$SHARED/out/hb-$st.mp4; rm -f "$out"
      echo "== transfer $st rep $rep" >>"$RUN_LOG"
      run_measured "$out" dffmpeg_on 2x1 hb "$out" "$st"
      cp "$WORK/dffmpeg.last" "$WORK/json/hb-2x1-dffmpeg-$st-$rep.jsonl"
      ovh=$(dffmpeg_overhead)
      record hb 2x1 "dffmpeg-$st" "$rep" ""
    done
    w=$(med hb 2x1 "dffmpeg-$st" 5); cc=$(med hb 2x1 "dffmpeg-$st" 6); hcm=$(med hb 2x1 "dffmpeg-$st" 7)
    echo "| dffmpeg, storage $st, 2 × 1.0 CPU, \`${ARGS[hb]}\` (median of 2) | $w | $(awk -v s="$size" -v w="$w" 'BEGIN{printf "%.0f", s/1e6/w}') | $cc | $hcm | $(exact hb 2x1 "dffmpeg-$st") |"
  done
  echo
  echo "(controller CPU: the command on this machine with its children — for dffmpeg: probe, split and ssh encryption (storage ssh; with nfs the nodes read the source in place), verify, audio, merge; hosts CPU: all test hosts' cgroups)"
}

main() {
  setup
  if [ "${REPORT_ONLY:-0}" = 1 ]; then
    [ -s "$TSV" ] || die "no $TSV to report"
    report; plot
    return
  fi
  new_results
  trap teardown EXIT
  trap 'log "interrupted"; exit 130' INT TERM
  make_clip "$CLIP" "$DURATION" || die "cannot generate the clip"
  IN_FRAMES=$(frames "$CLIP"); IN_AUDIO=$(stream_duration "$CLIP" a)
  log "clip $CLIP: $DURATION s, $IN_FRAMES frames; $REPS repetition(s); methods: $METHODS; dffmpeg slots: $SLOTS${CHUNK:+, --chunk $CHUNK}; quotas: $QUOTAS; speed memory: $MEMORY"
  local t=$EPOCHREALTIME q
  for q in $QUOTAS; do
    hosts_up "$q"
    scenarios "$q"
  done
  report
  plot
  log "scenarios took $(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", b-a}') s"
  if [ "$TRANSFER" = 1 ]; then
    case " $METHODS " in *" dffmpeg-"*) transfer ;; *) log "transfer test skipped (no dffmpeg method)" ;; esac
  fi
}

main "$@"; exit $?
