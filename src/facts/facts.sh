# dffmpeg's facts of a node: one `@@dffmpeg-facts NAME` section each, read
# back by src/facts/mod.rs. Fixed text; run as `sh -c SCRIPT dffmpeg-facts DIR`,
# where DIR ($1) is the directory whose free space is measured.
m='@@dffmpeg-facts '
echo "${m}arch"; uname -m
echo "${m}dpkg_arch"; dpkg --print-architecture 2>/dev/null
echo "${m}os_release"; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null
echo "${m}cores"; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null
echo "${m}mem"; awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null
echo "${m}cpu_quota"
# cgroup v2 cpu.max / v1 cpu.cfs_quota_us at every level of this process's
# cgroup path: the caller takes the tightest.
while IFS=: read -r _ ctl path; do
  case ",$ctl," in
    ,,) d=/sys/fs/cgroup$path; v=2 ;;
    *,cpu,*) d=/sys/fs/cgroup/$ctl$path; [ -d "$d" ] || d=/sys/fs/cgroup/cpu$path; v=1 ;;
    *) continue ;;
  esac
  while [ -d "$d" ]; do
    if [ "$v" = 2 ]; then
      [ -r "$d/cpu.max" ] && cat "$d/cpu.max"
    elif [ -r "$d/cpu.cfs_quota_us" ]; then
      echo "$(cat "$d/cpu.cfs_quota_us") $(cat "$d/cpu.cfs_period_us")"
    fi
    case $d in /sys/fs/cgroup | "/sys/fs/cgroup/$ctl" | /sys/fs/cgroup/cpu) break ;; esac
    d=${d%/*}
  done
done </proc/self/cgroup 2>/dev/null
echo "${m}encoders"
# A cache of `ffmpeg -encoders` (an ffmpeg start costs a slow node most of
# this script), valid while the ffmpeg binary and the dpkg database are
# unchanged: any package install, upgrade or removal renews it.
f=$(command -v ffmpeg 2>/dev/null)
if [ -n "$f" ]; then
  key=$(stat -L -c '%n %Y %s %i' "$f" /var/lib/dpkg/status 2>/dev/null | tr '\n' ' ')
  c=${XDG_CACHE_HOME:-$HOME/.cache}/dffmpeg/ffmpeg-encoders
  if [ -n "$key" ] && [ -r "$c" ] && [ "$(head -n 1 "$c")" = "$key" ]; then
    tail -n +2 "$c"
  else
    out=$(ffmpeg -encoders 2>&1) && [ -n "$key" ] && mkdir -p "${c%/*}" 2>/dev/null &&
      printf '%s\n%s\n' "$key" "$out" >"$c.$$" 2>/dev/null && mv -f "$c.$$" "$c" 2>/dev/null
    rm -f "$c.$$" 2>/dev/null
    printf '%s\n' "$out"
  fi
else
  echo "ffmpeg: not found"
fi
echo "${m}disk"
d=$1
{ [ -n "$d" ] && [ -d "$d" ]; } || d=$HOME
{ [ -n "$d" ] && [ -d "$d" ]; } || d=/
echo "$d"; df -Pk "$d" 2>/dev/null | tail -n 1
# The login user (the one sudo was run by, when setup becomes root).
u=${SUDO_USER:-$(id -un)}
echo "${m}user"; echo "$u"
echo "${m}home"; getent passwd "$u" | cut -d: -f6
echo "${m}hostname"; uname -n
echo "${m}systemd"; if [ -d /run/systemd/system ]; then echo yes; else echo no; fi
echo "${m}end"
