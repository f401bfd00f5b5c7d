//! Running generated shell scripts on a node: the script goes to `sh -s` on
//! stdin (no command-line length limit, nothing to quote), through
//! `sudo -n` when the play becomes root. Batches of changes are one script
//! with a marker line around each task's output, so one round trip applies
//! them all and every task still gets its own status and message.

use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::remote::{strip_pid_line, Transport, KILL_SCRIPT, PID_PREFIX};

#[derive(Debug)]
pub struct ScriptOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start: {0}")]
    Spawn(std::io::Error),
    #[error("{0}")]
    Io(std::io::Error),
    /// The node did not finish the script in time (frozen, or a command
    /// hanging, e.g. on an NFS hard mount); it was stopped.
    #[error("no answer within {0} s (the node or a command on it hangs); stopped")]
    Timeout(u64),
}

/// argv running a script from stdin, as root through `sudo -n` if `become`.
pub fn shell_argv(become_root: bool) -> Vec<String> {
    let mut argv = Vec::new();
    if become_root {
        argv.extend(["sudo", "-n"].map(String::from));
    }
    argv.extend(["sh", "-s"].map(String::from));
    argv
}

/// Run `script` on the node, as root if `become_root`, within `limit`.
/// When the limit passes, the remote process group is killed (through the
/// pid the remote shell reported) and the local client too.
pub async fn run_script<T: Transport + ?Sized>(
    t: &T,
    become_root: bool,
    script: &str,
    limit: Duration,
) -> Result<ScriptOutput, ExecError> {
    let mut cmd = t.command(&shell_argv(become_root));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(ExecError::Spawn)?;
    let mut stdin =
        child.stdin.take().ok_or_else(|| ExecError::Io(std::io::Error::other("no stdin pipe")))?;
    let mut so = child.stdout.take().ok_or_else(|| ExecError::Io(std::io::Error::other("no stdout pipe")))?;
    let mut se = child.stderr.take().ok_or_else(|| ExecError::Io(std::io::Error::other("no stderr pipe")))?;
    // The process to stop on a timeout: the remote shell's pid (its first
    // stderr line) over SSH, the local child's (its own group) otherwise.
    let pid = OnceLock::new();
    if !t.reports_pid() {
        if let Some(id) = child.id() {
            let _ = pid.set(id); // Fresh cell: cannot be set already.
        }
    }
    let body = script.as_bytes().to_vec();
    let writer = async move {
        // The remote end may exit early (sudo refusing): a broken pipe here
        // is reported through the exit status instead.
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
        drop(stdin);
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let reader = async {
        let read_err = async {
            let mut chunk = [0u8; 8192];
            loop {
                let n = se.read(&mut chunk).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                // Bounded: past the cap, a node's stderr is read and dropped.
                let room = crate::remote::MAX_STDERR.saturating_sub(err.len());
                err.extend_from_slice(&chunk[..n.min(room)]);
                if pid.get().is_none() {
                    if let Some(p) = reported_pid(&err) {
                        let _ = pid.set(p); // Only this task sets it.
                    }
                }
            }
        };
        let read_out = async {
            let (o, _) = crate::text::read_capped(&mut so, crate::remote::MAX_STDOUT).await?;
            out = o;
            Ok::<(), std::io::Error>(())
        };
        let (_, a, b) = tokio::join!(writer, read_out, read_err);
        a.map_err(ExecError::Io)?;
        b.map_err(ExecError::Io)?;
        child.wait().await.map_err(ExecError::Io)
    };
    let status = match tokio::time::timeout(limit, reader).await {
        Ok(r) => r?,
        Err(_) => {
            if let Some(p) = pid.get() {
                stop(t, become_root, *p).await;
            }
            return Err(ExecError::Timeout(limit.as_secs()));
        }
    };
    let mut stderr = String::from_utf8_lossy(&err).into_owned();
    if t.reports_pid() {
        stderr = strip_pid_line(&stderr).to_string();
    }
    Ok(ScriptOutput { code: status.code(), stdout: String::from_utf8_lossy(&out).into_owned(), stderr })
}

/// Stop the script's process group: as root through `sudo -n` when it runs
/// as root (the login user may not signal it), else as the transport does.
async fn stop<T: Transport + ?Sized>(t: &T, become_root: bool, pid: u32) {
    if !become_root {
        return t.kill(pid).await;
    }
    let pid = pid.to_string();
    let argv: Vec<String> =
        ["sudo", "-n", "sh", "-c", KILL_SCRIPT, "dffmpeg-kill", &pid].iter().map(|w| w.to_string()).collect();
    // Best effort: a node that does not answer this either is reported
    // unreachable anyway, and the local client dies with its handle.
    let _ = tokio::time::timeout(Duration::from_secs(10), crate::remote::run(t, &argv)).await;
}

/// The pid of a complete `dffmpeg-pid N` first line.
fn reported_pid(stderr: &[u8]) -> Option<u32> {
    let line = stderr.split(|b| *b == b'\n').next().filter(|_| stderr.contains(&b'\n'))?;
    // Never 0 or 1: a kill of those would hit a process group or init.
    std::str::from_utf8(line).ok()?.strip_prefix(PID_PREFIX)?.trim().parse().ok().filter(|p: &u32| *p > 1)
}

/// A marker no task output will contain by accident.
pub fn nonce() -> String {
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:x}", t, std::process::id())
}

/// One item of a batch: its id and shell lines (run under `set -e`).
pub struct BatchItem {
    pub id: usize,
    pub script: String,
}

/// The batch script: each item in its own `set -e` subshell with stderr
/// merged into stdout between markers; the first failure ends the batch.
pub fn batch_script(items: &[BatchItem], nonce: &str) -> String {
    let mut s = String::from("{\numask 022\n");
    for it in items {
        s.push_str(&format!(
            "printf '\\n@@{nonce} T {id}\\n'\n(\nset -e\n{body}\n) 2>&1\nrc=$?\nprintf '\\n@@{nonce} R {id} %s\\n' \"$rc\"\nif [ \"$rc\" -ne 0 ]; then echo '@@{nonce} END'; exit 0; fi\n",
            id = it.id,
            body = it.script.trim_end()
        ));
    }
    s.push_str(&format!("echo '@@{nonce} END'\n}} </dev/null\n"));
    s
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemResult {
    pub id: usize,
    pub rc: i32,
    pub output: String,
}

/// Results of the items that ran, and whether the batch reached its end.
pub fn parse_batch(out: &str, nonce: &str) -> (Vec<ItemResult>, bool) {
    let start = format!("@@{nonce} T ");
    let result = format!("@@{nonce} R ");
    let end = format!("@@{nonce} END");
    let mut results = Vec::new();
    let mut current: Option<(usize, String)> = None;
    let mut ended = false;
    for line in out.split('\n') {
        if let Some(id) = line.strip_prefix(&start) {
            current = id.trim().parse().ok().map(|id| (id, String::new()));
        } else if let Some(rest) = line.strip_prefix(&result) {
            let mut w = rest.split_whitespace();
            let id = w.next().and_then(|x| x.parse().ok());
            let rc = w.next().and_then(|x| x.parse().ok());
            if let (Some(id), Some(rc)) = (id, rc) {
                let output = match current.take() {
                    Some((cid, o)) if cid == id => o,
                    _ => String::new(),
                };
                let output = output.trim_end_matches('\n').to_string();
                results.push(ItemResult { id, rc, output });
            }
        } else if line == end {
            ended = true;
        } else if let Some((_, o)) = current.as_mut() {
            o.push_str(line);
            o.push('\n');
        }
    }
    (results, ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::local::Local;

    #[tokio::test]
    async fn a_batch_reports_each_item_and_stops_at_the_first_failure() {
        let n = nonce();
        let items = vec![
            BatchItem { id: 3, script: "echo one\necho err >&2".into() },
            BatchItem { id: 5, script: "false\necho never".into() },
            BatchItem { id: 7, script: "echo not run".into() },
        ];
        let out = run_script(&Local::new("l"), false, &batch_script(&items, &n), LIMIT).await.unwrap();
        let (res, ended) = parse_batch(&out.stdout, &n);
        assert!(ended);
        assert_eq!(
            res,
            vec![
                ItemResult { id: 3, rc: 0, output: "one\nerr".into() },
                ItemResult { id: 5, rc: 1, output: String::new() },
            ]
        );
    }

    #[tokio::test]
    async fn scripts_cannot_eat_their_own_stdin() {
        // `cat` would read the rest of the script if stdin were not /dev/null.
        let n = nonce();
        let items =
            vec![BatchItem { id: 1, script: "cat".into() }, BatchItem { id: 2, script: "echo after".into() }];
        let out = run_script(&Local::new("l"), false, &batch_script(&items, &n), LIMIT).await.unwrap();
        let (res, ended) = parse_batch(&out.stdout, &n);
        assert!(ended);
        assert_eq!(res[1].output, "after");
    }

    const LIMIT: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_hanging_script_is_stopped_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // A child of the script that would outlive it: stopped with it.
        let script = format!("sleep 1000 & echo $! > '{}'\nwait\n", pidfile.display());
        let t = std::time::Instant::now();
        let r = run_script(&Local::new("l"), false, &script, Duration::from_millis(500)).await;
        assert!(matches!(r, Err(ExecError::Timeout(_))), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let sleeper: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let t = std::time::Instant::now();
        // SAFETY: kill(pid, 0) only checks for existence.
        while unsafe { libc::kill(sleeper, 0) } == 0 {
            let stat = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
            if stat.split_whitespace().nth(2) == Some("Z") {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "the script's child outlived the timeout");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn the_pid_line_once_complete() {
        assert_eq!(reported_pid(b"dffmpeg-pid 42\nrest"), Some(42));
        assert_eq!(reported_pid(b"dffmpeg-pid 4"), None);
        assert_eq!(reported_pid(b"other\n"), None);
        assert_eq!(reported_pid(b"dffmpeg-pid 1\n"), None);
        assert_eq!(reported_pid(b"dffmpeg-pid 0\n"), None);
    }

    #[test]
    fn become_is_an_argv_prefix() {
        assert_eq!(shell_argv(true), vec!["sudo", "-n", "sh", "-s"]);
        assert_eq!(shell_argv(false), vec!["sh", "-s"]);
    }
}
