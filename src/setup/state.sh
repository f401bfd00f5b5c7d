# Functions of setup's state probe (src/setup/state.rs). Every variable
# field is printed base64-encoded, so the parser never guesses at quoting.
# `max` (the largest file whose content is read) is set by the caller.
# shellcheck shell=sh disable=SC2154

b() { printf '%s' "$1" | base64 -w0; }

# pf B64 PATH: stat and (small, readable) content of a path, or missing.
pf() {
  if s=$(stat -L -c '%a %u %g %U %G %s %F' -- "$2" 2>/dev/null); then
    printf 'S\t%s\t%s\n' "$1" "$s"
    t=${s#* * * * * }
    if [ -f "$2" ] && [ -r "$2" ] && [ "${t%% *}" -le "$max" ]; then
      printf 'C\t%s\t' "$1"; base64 -w0 <"$2"; echo
    fi
  else
    printf 'M\t%s\n' "$1"
  fi
}

# pu B64 USER: the passwd entry, ~/.ssh and ~/.ssh/authorized_keys.
pu() {
  if l=$(getent passwd "$2"); then
    printf 'U\t%s\t%s\n' "$1" "$(b "$l")"
    h=$(printf '%s' "$l" | cut -d: -f6)
    pf "$(b "$h/.ssh")" "$h/.ssh"; pf "$(b "$h/.ssh/authorized_keys")" "$h/.ssh/authorized_keys"
  else
    printf 'U\t%s\t\n' "$1"
  fi
}

# psv B64 SERVICE: systemd's view of a unit (nothing without systemd).
psv() {
  if [ -d /run/systemd/system ]; then
    printf 'V\t%s\t%s\t%s\n' "$1" "$(systemctl is-active -- "$2" 2>/dev/null)" "$(systemctl is-enabled -- "$2" 2>/dev/null)"
  fi
}

# pdm B64 PIDFILE: whether the pid in a daemon's pidfile is alive.
pdm() {
  p=$(cat -- "$2" 2>/dev/null) || p=
  case $p in '' | *[!0-9]*) printf 'L\t%s\t0\n' "$1"; return ;; esac
  if kill -0 "$p" 2>/dev/null; then printf 'L\t%s\t1\n' "$1"; else printf 'L\t%s\t0\n' "$1"; fi
}

# The node-wide tables: installed packages, mounts, groups.
tables() {
  if command -v dpkg-query >/dev/null 2>&1; then
    printf 'P\t'; dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null | base64 -w0; echo
  fi
  printf 'K\t'; base64 -w0 </proc/mounts; echo
  printf 'G\t'; base64 -w0 </etc/group; echo
}
