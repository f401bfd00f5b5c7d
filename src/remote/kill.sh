# Stop a remote process and its process group with SIGKILL at once (a
# stopped attempt's output is thrown away, and a SIGTERMed ffmpeg would
# first flush its encoder: seconds on a slow node), then wait up to 2 s
# until it is gone. Run as `sh -c SCRIPT dffmpeg-kill PID`.
kill -KILL "-$1" 2>/dev/null || kill -KILL "$1" 2>/dev/null
i=0
while [ "$i" -lt 20 ] && kill -0 "$1" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
true
