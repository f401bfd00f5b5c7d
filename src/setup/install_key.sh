# Add a public key line ($1) to ~/.ssh/authorized_keys unless its key blob
# ($2) is there already, with the permissions sshd insists on. Run as
# `sh -c SCRIPT dffmpeg-install-key LINE BLOB` over a password login.
umask 077
mkdir -p "$HOME/.ssh"
touch "$HOME/.ssh/authorized_keys"
chmod 700 "$HOME/.ssh"
chmod 600 "$HOME/.ssh/authorized_keys"
grep -qF -- "$2" "$HOME/.ssh/authorized_keys" || printf '%s\n' "$1" >>"$HOME/.ssh/authorized_keys"
