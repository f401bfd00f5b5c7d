# Closes one SSH master when dffmpeg is gone, however it ended (even
# SIGKILL): stdin is a pipe whose other end only dffmpeg holds, so `read`
# returns at its exit; then the master is told to exit, whatever sessions
# it still carries. Run on this machine as
# `sh -c SCRIPT dffmpeg-watch CONTROL_SOCKET`.
read -r _ || true
exec ssh -S "$1" -o BatchMode=yes -O exit none >/dev/null 2>&1
