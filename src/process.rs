//! Local child processes: every program dffmpeg starts on this machine
//! (ffmpeg, ffprobe, ssh clients and masters, ssh-keygen) is started here,
//! so that none outlives dffmpeg: each dies with it (`PR_SET_PDEATHSIG`,
//! even when dffmpeg itself is killed with SIGKILL) and with the handle
//! that owns it (`kill_on_drop`).

use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Programs started on this machine so far (see [`started`]).
static STARTED: AtomicU64 = AtomicU64::new(0);

/// How many programs dffmpeg has started on this machine: a process start
/// costs ~70 ms of CPU for a Debian ffmpeg on x86 (it links ~200
/// libraries), far more on a Pi, so `--json` reports it (`batch_done`).
pub fn started() -> u64 {
    STARTED.load(Ordering::Relaxed)
}

/// A command for `program` whose process is killed when dffmpeg dies or
/// the returned command's child handle is dropped.
///
/// The death signal follows the *thread* that spawned the child; dffmpeg
/// spawns from its async tasks, whose runtime threads live as long as the
/// process.
pub fn command<S: AsRef<OsStr>>(program: S) -> tokio::process::Command {
    STARTED.fetch_add(1, Ordering::Relaxed);
    let mut cmd = tokio::process::Command::new(program);
    cmd.kill_on_drop(true);
    die_with_parent(cmd.as_std_mut());
    cmd
}

/// Run `argv` to its end with no input and its output discarded (the
/// controller's own ffmpeg runs: a merge, a first-frame encode); its exit
/// status and its error text, printable and trimmed.
pub async fn run_quiet(argv: &[String]) -> std::io::Result<(std::process::ExitStatus, String)> {
    use std::process::Stdio;
    let out = command(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await?;
    let err = crate::text::printable(String::from_utf8_lossy(&out.stderr).trim());
    Ok((out.status, err))
}

/// Run a controller-side ffmpeg to its end (a merge, a side-stream
/// encode); its error text on failure.
pub async fn run_ffmpeg(argv: &[String]) -> anyhow::Result<()> {
    use anyhow::Context;
    let (status, err) = run_quiet(argv).await.context("cannot run ffmpeg")?;
    if !status.success() {
        anyhow::bail!("{}", if err.is_empty() { "ffmpeg failed" } else { &err });
    }
    Ok(())
}

/// Count a program started on this machine by another one dffmpeg started
/// (an encoder under a local node's shell).
pub fn count_started(n: u64) {
    STARTED.fetch_add(n, Ordering::Relaxed);
}

/// The same for a blocking [`std::process::Command`].
pub fn std_command<S: AsRef<OsStr>>(program: S) -> std::process::Command {
    STARTED.fetch_add(1, Ordering::Relaxed);
    let mut cmd = std::process::Command::new(program);
    die_with_parent(&mut cmd);
    cmd
}

/// Cap the size of any file the command writes (`RLIMIT_FSIZE`, inherited
/// by what it starts): a chunk streamed back from a node into a file
/// cannot outgrow what its frames may take. Writing past it kills the
/// writer (SIGXFSZ), which fails the attempt.
pub fn limit_file_size(cmd: &mut std::process::Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then go at once.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_dies_with_its_parent() {
        // A middle process starts a sleeper through `std_command`'s rules
        // (as dffmpeg would), then is SIGKILLed: the sleeper must go too.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let exe = std::env::current_exe().unwrap();
        let mut middle = std::process::Command::new(exe)
            .args(["--exact", "process::tests::spawn_sleeper_and_wait", "--ignored", "--nocapture"])
            .env("DFFMPEG_TEST_PIDFILE", &pidfile)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            assert!(t0.elapsed().as_secs() < 20, "the sleeper never started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let sleeper: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        middle.kill().unwrap();
        middle.wait().unwrap();
        let t0 = std::time::Instant::now();
        // SAFETY: kill(pid, 0) only checks for existence.
        while unsafe { libc::kill(sleeper, 0) } == 0 {
            // A zombie until reaped by init counts as gone.
            let stat = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
            if stat.split_whitespace().nth(2) == Some("Z") {
                break;
            }
            assert!(t0.elapsed().as_secs() < 5, "the child outlived its parent");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The middle process of the test above.
    #[test]
    #[ignore]
    fn spawn_sleeper_and_wait() {
        let Some(pidfile) = std::env::var_os("DFFMPEG_TEST_PIDFILE") else { return };
        let mut child = std_command("sleep").arg("60").spawn().unwrap();
        std::fs::write(pidfile, child.id().to_string()).unwrap();
        child.wait().unwrap();
    }
}
