# Run a Slurm job's command ("$@") on its node: the job's id first, as the
# first stderr line (dffmpeg cancels the job by it), then the command. A
# cancelled job's tasks get SIGTERM (SIGKILL only KillWait later, 30 s by
# default), on which an encoder would first flush its frames: this shell,
# leader of the task's process group, kills the whole group at once
# instead. The command keeps the job's stdin (a background command's
# would be /dev/null); the exit status is the command's. Run as
# `sh -c SCRIPT dffmpeg-slurm COMMAND...`.
echo "dffmpeg-pid ${SLURM_JOB_ID:-0}" >&2
trap 'kill -KILL 0' TERM INT
exec 3<&0
"$@" <&3 3<&- &
exec 3<&-
wait "$!"
