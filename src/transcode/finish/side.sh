# Encode a job's side streams on a node into a temporary file of its own
# (the output's format may need to seek back: MP4), then send that file on
# stdout. Run as `sh -c SCRIPT dffmpeg-side ffmpeg ARGS...`: the file's name
# is added as the last argument. The exit status is ffmpeg's (or cat's).
t=$(mktemp "${TMPDIR:-/tmp}/dffmpeg-side.XXXXXX") || exit 70
trap 'rm -f "$t"' EXIT
trap 'exit 143' HUP INT TERM
"$@" "$t" && cat "$t"
