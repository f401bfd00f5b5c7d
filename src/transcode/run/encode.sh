# Run an encoder and check what it made, on the node: the controller then
# compares a small record with its plan instead of probing every chunk.
# Run as `sh -c SCRIPT dffmpeg-encode CHUNK FIELDS ffmpeg ARGS...`:
#   CHUNK   the chunk file the encoder writes, or `-` when it writes its
#           stdout (the chunk then goes on to this script's stdout through
#           `tee`, and ffprobe reads the same bytes from a pipe);
#   FIELDS  ffprobe's -show_entries (stream properties, packet=pts, ...).
# On stderr, after the encoder's own output:
#   dffmpeg-times   then the shell's `times` (its own, then its children's
#                   user and system time: the encoder's CPU);
#   dffmpeg-facts   then (when the encoder succeeded) ffprobe's key=value
#                   lines of the chunk, its `pts=` lines summed up
#                   (packets, untimed, first_pts), bytes= (a file chunk's
#                   size), probe_status= and ffprobe's errors (probe_error=).
# No temporary file: a cancelled attempt is killed with its process group
# and leaves nothing behind. The exit status is the encoder's.
chunk=$1 fields=$2
shift 2
# probe FILE [drain]: drain reads what ffprobe left of stdin (pipe:0), so
# that a failing or missing ffprobe never breaks the chunk's way out.
probe() {
  { ffprobe -v error -select_streams v:0 -show_entries "$fields" -of default=nw=1 -i "$1" 2>&1
    echo "probe_status=$?"
    if [ "${2:-}" = drain ]; then cat >/dev/null; fi; } |
    awk '/^pts=/ { n++; v = substr($0, 5); if (v == "N/A") u++; else if (m == "" || v + 0 < m + 0) m = v; next }
         /^[A-Za-z_:]+=/ { print; next }
         { print "probe_error=" $0 }
         END { printf "packets=%d\nuntimed=%d\nfirst_pts=%s\n", n, u, (m == "" ? "N/A" : m) }'
}
# The encoder's CPU time (its shell's children: the encoder alone).
spent() {
  echo dffmpeg-times >&2
  times >&2
}
if [ "$chunk" = - ]; then
  # The encoder's stdout into tee; tee's copy to fd 5 (the chunk's way
  # out) and to fd 7, a pipe into ffprobe; the encoder's status on fd 6.
  exec 5>&1
  facts=$( { { { "$@" 5>&- 6>&- 7>&-; st=$?; spent; echo "encoder_status=$st" >&6; } |
    tee /dev/fd/7 >&5; } 7>&1 | probe pipe:0 drain 5>&- 6>&-; } 6>&1 )
  exec 5>&-
  s=${facts##*encoder_status=}
  s=${s%%[!0-9]*}
  s=${s:-70}
else
  "$@"
  s=$?
  spent
  facts=
  if [ "$s" = 0 ]; then
    facts=$(probe "$chunk")
    facts="$facts
bytes=$(wc -c <"$chunk")"
  fi
fi
if [ "$s" = 0 ]; then
  echo dffmpeg-facts >&2
  printf '%s\n' "$facts" >&2
fi
exit "$s"
