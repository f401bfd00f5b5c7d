# Run an encoder ("$@") and report the CPU time it used: a marker line and
# the shell's `times` (its own, then its children's user and system time)
# on stderr, after the encoder's own output. Run as
# `sh -c SCRIPT dffmpeg-encode ffmpeg ARGS...`; stdin and stdout are the
# encoder's. The exit status is the encoder's.
"$@"
s=$?
echo dffmpeg-times >&2
times >&2
exit "$s"
