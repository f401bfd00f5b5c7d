//! Hardening of `dffmpeg setup` and `dffmpeg facts` on test hosts (issue
//! 14): first contact with new hosts and the password, dffmpeg's own
//! restricted key, `identity_file: ~/...`, a `noexec` TMPDIR and a
//! known_hosts path with spaces, files that are not UTF-8 or too large to
//! read, escape sequences from nodes, a hanging and a frozen node, and
//! SIGINT/SIGTERM/SIGKILL leaving no ssh behind.
//!
//! One cluster, in order (lab `hdset`, 198.18.131.0/24): pi3 (`host:
//! local`, where dffmpeg runs as pi), pi2 (Raspbian) and box (Debian, with
//! its own `identity_file`). Needs root.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::lab::{q, Host};
use crate::common::picluster::*;

/// dffmpeg's known_hosts for pi, with spaces in its path.
const KH: &str = "/home/pi/my state/known hosts";

/// pi3 controls; pi2 and box compute, box with a key of its own.
fn inventory(c: &PiCluster) -> String {
    c.inventory(&[("pi3", ""), ("pi2", ""), ("box", "identity_file: ~/.ssh/box_key")])
}

/// `dffmpeg ARGS` as pi on pi3, with dffmpeg's known_hosts at [`KH`], a
/// `noexec` TMPDIR and an `ssh` in PATH that logs its environment; killed
/// after 100 s (a hang fails the test instead of stalling it).
fn dff(c: &PiCluster, args: &str, stdin: Option<&str>) -> Run {
    let bin = env!("CARGO_BIN_EXE_dffmpeg");
    let feed = stdin.map(|s| format!("printf '%s\\n' {} | ", q(s))).unwrap_or_default();
    let cmd = format!(
        "{feed}env DFFMPEG_KNOWN_HOSTS={} TMPDIR=/home/pi/noexec PATH=/home/pi/wrap:$PATH timeout -s KILL 100 {} {args}",
        q(KH),
        q(bin)
    );
    let t = Instant::now();
    let out = c.controller().exec(&format!("su - {USER} -c {}", q(&cmd)));
    let run = Run::ended(&out, t);
    eprintln!("=== dffmpeg {args}\n{run}");
    run
}

fn setup(c: &PiCluster, extra: &str) -> Run {
    dff(c, &format!("setup {INVENTORY} {extra}"), None)
}

/// The SHA256 fingerprint of a host's ed25519 key, as the host itself sees it.
fn host_fingerprint(h: &Host) -> String {
    let out = h.exec_ok("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub");
    out.split_whitespace().nth(1).expect("fingerprint").to_string()
}

fn key_fingerprint(h: &Host, public: &str) -> String {
    let out = h.exec_ok(&format!("ssh-keygen -lf {}", q(public)));
    out.split_whitespace().nth(1).expect("fingerprint").to_string()
}

fn read(h: &Host, path: &str) -> Vec<u8> {
    std::fs::read(h.root().join(path.trim_start_matches('/'))).expect("read a host's file")
}

fn write(h: &Host, path: &str, bytes: &[u8]) {
    std::fs::write(h.root().join(path.trim_start_matches('/')), bytes).expect("write a host's file");
}

fn no_failure(r: &Run, nodes: &[&str]) {
    for n in nodes {
        let v = r.counts(n);
        assert_eq!((v[2], v[3]), (0, 0), "{n} unreachable/failed:\n{r}");
    }
}

/// Processes of pi3 that belong to dffmpeg's ssh (clients and masters
/// carry the control directory in their command line).
fn ssh_left(pi3: &Host) -> Vec<u32> {
    pi3.pids_matching("/tmp/dffmpeg-")
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The dffmpeg process (not its `su` or shell parents) running on pi3.
fn dffmpeg_pid(pi3: &Host, pattern: &str) -> Option<u32> {
    pi3.pids_matching(pattern)
        .into_iter()
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "dffmpeg"))
}

/// Start `dffmpeg ARGS` in a thread; once `ready` holds, send `signal` to
/// it; the run, and how long it took after the signal.
fn signalled(c: &PiCluster, args: &str, ready: impl Fn() -> bool, signal: i32) -> (Run, Duration) {
    let pi3 = c.controller().clone();
    std::thread::scope(|s| {
        let run = s.spawn(|| dff(c, args, None));
        wait_until("dffmpeg is busy", Duration::from_secs(60), &ready);
        let pid = dffmpeg_pid(&pi3, args.split_whitespace().next().unwrap_or("")).expect("dffmpeg runs");
        let t = Instant::now();
        // SAFETY: kill(2) on a pid just seen.
        unsafe {
            libc::kill(pid as i32, signal);
        }
        let r = run.join().expect("run thread");
        (r, t.elapsed())
    })
}

#[test]
fn setup_and_facts_are_hardened_on_test_hosts() {
    let t0 = Instant::now();
    let c = PiCluster::new(
        "hdset",
        131,
        &[
            Spec { name: "pi3", os: Os::RaspbianBookworm, kind: Kind::Controller, uid_offset: 0 },
            Spec { name: "pi2", os: Os::RaspbianBookworm, kind: Kind::Compute, uid_offset: 0 },
            Spec { name: "box", os: Os::DebianTrixie, kind: Kind::Compute, uid_offset: 0 },
        ],
    );
    let (pi3, pi2, bx) = (c.host("pi3").clone(), c.host("pi2").clone(), c.host("box").clone());
    let (pi3_ip, pi2_ip, box_ip) = (pi3.ip.clone(), pi2.ip.clone(), bx.ip.clone());
    c.write_inventory(&inventory(&c));
    // pi's world on pi3: a noexec TMPDIR, an ssh that logs its environment,
    // box's own key (the inventory names it with `~/`).
    pi3.exec_ok(
        "mkdir -p /home/pi/wrap /home/pi/noexec /home/pi/.ssh\n\
         mount -t tmpfs -o noexec,mode=1777 tmpfs /home/pi/noexec\n\
         printf '#!/bin/sh\\n{ echo \"== $$\"; env; } >> /home/pi/ssh-env.log\\nexec /usr/bin/ssh \"$@\"\\n' > /home/pi/wrap/ssh\n\
         chmod 755 /home/pi/wrap/ssh && chmod 700 /home/pi/.ssh && chown -R pi: /home/pi/wrap /home/pi/.ssh",
    );
    pi3.exec_ok("su - pi -c \"ssh-keygen -q -t ed25519 -N '' -C box-key -f ~/.ssh/box_key\"");
    let fp = |h: &Host| host_fingerprint(h);
    let (pi2_fp, box_fp) = (fp(&pi2), fp(&bx));

    // 1. --ask-pass, the password on stdin (no terminal), no flag: the two
    // hosts were never seen, so they get no password; their fingerprints
    // are shown, nothing is trusted, nothing installed.
    let refused = dff(&c, &format!("setup {INVENTORY} --ask-pass"), Some(PASSWORD));
    assert_eq!(refused.code, 1, "{refused}");
    for (name, ip, fp) in [("pi2", &pi2_ip, &pi2_fp), ("box", &box_ip, &box_fp)] {
        assert_eq!(refused.counts(name)[2], 1, "{name} unreachable:\n{refused}");
        assert!(refused.stderr.contains(&format!("  {name} ({ip}): ED25519 {fp}")), "{refused}");
        assert!(refused.stdout.contains(&format!("host key not confirmed: node {name} ({ip})")), "{refused}");
    }
    for h in [&pi2, &bx] {
        let log = String::from_utf8_lossy(&read(h, "/var/log/sshd.log")).into_owned();
        assert!(!log.contains("password for pi"), "a password went to {}:\n{log}", h.name);
        assert!(!h.exec("test -e /home/pi/.ssh/authorized_keys").status.success());
    }
    let known = |ip: &str| pi3.exec(&format!("ssh-keygen -F {ip} -f {}", q(KH))).status.success();
    assert!(!known(&pi2_ip) && !known(&box_ip), "unconfirmed keys were trusted");

    // 2. With --accept-new-host-keys: the password goes, through dffmpeg
    // itself as the askpass program (a noexec TMPDIR is fine), never in an
    // environment; the fingerprints are in the report; the known_hosts
    // path with spaces is used.
    let first = dff(&c, &format!("setup {INVENTORY} --ask-pass --accept-new-host-keys"), Some(PASSWORD));
    assert_eq!(first.code, 0, "{first}");
    no_failure(&first, &["pi3", "pi2", "box"]);
    assert!(first.stdout.contains(&format!("new host key: [pi2] {pi2_ip} ED25519 {pi2_fp}")), "{first}");
    assert!(first.stdout.contains(&format!("new host key: [box] {box_ip} ED25519 {box_fp}")), "{first}");
    assert!(known(&pi2_ip) && known(&box_ip), "keys in {KH}");
    let env_log = pi3.exec_ok("cat /home/pi/ssh-env.log");
    assert!(env_log.contains("DFFMPEG_ASKPASS=1"), "the password logins used dffmpeg as askpass");
    assert!(!env_log.contains(PASSWORD), "the password was in ssh's environment");
    let found = pi3.exec("grep -rlsF raspberry /home/pi /tmp /root");
    assert!(found.stdout.is_empty(), "password stored: {}", String::from_utf8_lossy(&found.stdout));
    // dffmpeg's own key, restricted, on pi2; box's own key as it is; the
    // user's default key is neither made nor used.
    let dffmpeg_pub = c.cat("pi3", "/home/pi/.ssh/dffmpeg_ed25519.pub");
    let ak = |h: &str| -> Vec<String> {
        c.cat(h, "/home/pi/.ssh/authorized_keys").lines().map(str::to_string).collect()
    };
    assert_eq!(ak("pi2"), [format!("from=\"{pi3_ip}\",restrict {}", dffmpeg_pub.trim())]);
    assert_eq!(ak("box"), [c.cat("pi3", "/home/pi/.ssh/box_key.pub").trim().to_string()]);
    assert!(!pi3.exec("test -e /home/pi/.ssh/id_ed25519").status.success());
    let noop = setup(&c, "");
    assert_eq!(noop.code, 0, "{noop}");
    for n in ["pi3", "pi2", "box"] {
        assert_eq!(noop.changed(n), 0, "{noop}");
    }

    // On a terminal (`script` gives dffmpeg one) the question is asked once,
    // before the password: `n` sends nothing, `y` goes on.
    pi3.exec_ok(&format!("su - pi -c {}", q(&format!("ssh-keygen -R {pi2_ip} -f {}", q(KH)))));
    pi2.exec_ok("rm /home/pi/.ssh/authorized_keys");
    let passwords =
        || String::from_utf8_lossy(&read(&pi2, "/var/log/sshd.log")).matches("password for pi").count();
    let before = passwords();
    let on_terminal = |answers: &str| {
        let bin = env!("CARGO_BIN_EXE_dffmpeg");
        let cmd =
            format!("env DFFMPEG_KNOWN_HOSTS={} {} setup {INVENTORY} --ask-pass --limit pi2", q(KH), q(bin));
        let script = format!("printf {} | script -qec {} /dev/null", q(answers), q(&cmd));
        c.as_pi("pi3", &script)
    };
    let no = on_terminal("n\n");
    let text = String::from_utf8_lossy(&no.stdout).into_owned();
    assert_eq!(no.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("  pi2 ({pi2_ip}): ED25519 {pi2_fp}")) && text.contains("[y/N]"),
        "{text}"
    );
    assert!(text.contains("host key not confirmed: node pi2"), "{text}");
    assert_eq!(passwords(), before, "no password went to pi2");
    let yes = on_terminal(&format!("y\n{PASSWORD}\n"));
    let text = String::from_utf8_lossy(&yes.stdout).into_owned();
    assert_eq!(yes.status.code(), Some(0), "{text}");
    assert!(text.contains("changed: [pi2] install the controller's key with the password"), "{text}");
    assert_eq!(passwords(), before + 1, "one password login");
    assert!(known(&pi2_ip));

    // 3. The key works only from the controller, and without a pty.
    let tmp = tempfile::tempdir().expect("tempdir");
    let stolen = tmp.path().join("dffmpeg_ed25519");
    std::fs::write(&stolen, read(&pi3, "/home/pi/.ssh/dffmpeg_ed25519")).expect("copy key");
    std::fs::set_permissions(&stolen, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let elsewhere = std::process::Command::new("ssh")
        .arg("-i")
        .arg(&stolen)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5"])
        .arg(format!("pi@{pi2_ip}"))
        .arg("true")
        .output()
        .expect("ssh");
    assert!(!elsewhere.status.success(), "the key works from another address");
    let ssh_as_pi = |extra: &str| {
        c.as_pi(
            "pi3",
            &format!(
                "ssh -i ~/.ssh/dffmpeg_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes -o {} {extra} pi@{pi2_ip} true",
                q(&format!("UserKnownHostsFile=\"{KH}\""))
            ),
        )
    };
    assert!(ssh_as_pi("").status.success(), "{:?}", ssh_as_pi(""));
    let pty = ssh_as_pi("-tt");
    assert!(String::from_utf8_lossy(&pty.stderr).contains("PTY allocation request failed"), "{pty:?}");

    // 4. dffmpeg offers its key only: a default key of pi's that pi2 would
    // accept is not used.
    pi3.exec_ok("su - pi -c \"ssh-keygen -q -t ed25519 -N '' -C decoy -f ~/.ssh/id_ed25519\"");
    let decoy = c.cat("pi3", "/home/pi/.ssh/id_ed25519.pub");
    pi2.exec_ok(&format!("printf '%s\\n' {} >> /home/pi/.ssh/authorized_keys", q(decoy.trim())));
    let log_len = read(&pi2, "/var/log/sshd.log").len();
    let facts = dff(&c, &format!("facts {INVENTORY}"), None);
    assert_eq!(facts.code, 0, "{facts}");
    let log = read(&pi2, "/var/log/sshd.log");
    let accepted: Vec<String> = String::from_utf8_lossy(&log[log_len..])
        .lines()
        .filter(|l| l.contains("Accepted publickey for pi"))
        .map(str::to_string)
        .collect();
    let own = key_fingerprint(&pi3, "/home/pi/.ssh/dffmpeg_ed25519.pub");
    assert!(!accepted.is_empty() && accepted.iter().all(|l| l.contains(&own)), "{accepted:?}");
    pi2.exec_ok("sed -i '/ decoy$/d' /home/pi/.ssh/authorized_keys");

    // 5. Files that are not UTF-8 keep every byte through a change; a file
    // too large to have been read is refused, not replaced.
    let fstab = read(&pi2, "/etc/fstab");
    let drifted = String::from_utf8_lossy(&fstab).replace(" rw,nosuid", " ro,nosuid");
    let latin1: &[u8] = b"# caf\xe9 \xff\xfe\r\n";
    write(&pi2, "/etc/fstab", &[latin1, drifted.as_bytes()].concat());
    let keys = read(&pi2, "/home/pi/.ssh/authorized_keys");
    // The key without `restrict` (still lets dffmpeg in): setup restores it.
    let loose = String::from_utf8_lossy(&keys).replace(",restrict ", " ");
    write(&pi2, "/home/pi/.ssh/authorized_keys", &[&b"# h\xe9llo\n"[..], loose.as_bytes()].concat());
    let big_fstab = [read(&bx, "/etc/fstab"), b"# ".to_vec(), vec![b'x'; 1_200_000], b"\n".to_vec()].concat();
    write(&bx, "/etc/fstab", &big_fstab);
    let r = setup(&c, "");
    assert_eq!(r.code, 1, "{r}");
    no_failure(&r, &["pi3", "pi2"]);
    let after = read(&pi2, "/etc/fstab");
    assert!(after.starts_with(latin1), "{:?}", String::from_utf8_lossy(&after[..40]));
    assert_eq!(after, [latin1, &fstab[..]].concat(), "the rest of fstab as setup wrote it first");
    assert_eq!(read(&pi2, "/home/pi/.ssh/authorized_keys"), [&b"# h\xe9llo\n"[..], &keys[..]].concat());
    assert_eq!(r.counts("box")[3], 1, "{r}");
    assert!(r.stdout.contains("/etc/fstab was not read (") && r.stdout.contains("refusing"), "{r}");
    assert_eq!(read(&bx, "/etc/fstab"), big_fstab, "box's fstab left as it was");
    write(&bx, "/etc/fstab", &big_fstab[..big_fstab.len() - 1_200_003]);

    // 6. Text from a node reaches the report without escape sequences.
    pi2.exec_ok(&format!(
        "umount {SHARED_DIR}/upload\n\
         printf '#!/bin/sh\\nprintf \"E: \\\\033[2J\\\\033]0;pwned\\\\007broken\\\\n\" >&2\\nexit 32\\n' > /usr/local/sbin/mount\n\
         chmod 755 /usr/local/sbin/mount"
    ));
    let r = setup(&c, "");
    assert_eq!(r.code, 1, "{r}");
    assert!(r.stdout.contains("failed: [pi2] NFS mount (upload) => exit status 32: E: broken"), "{r}");
    assert!(!r.stdout.contains('\u{1b}') && !r.stdout.contains('\u{7}'), "{:?}", r.stdout);
    pi2.exec_ok("rm /usr/local/sbin/mount");
    let fixed = setup(&c, "");
    assert_eq!(fixed.code, 0, "{fixed}");

    // 7. A node whose work hangs (sshd answers, a command never ends: an
    // NFS hard mount, say), then a frozen node: the others finish, it is
    // unreachable, within the limit.
    bx.exec_ok(
        "printf '#!/bin/sh\\nexec sleep 4242\\n' > /usr/local/bin/ffmpeg && chmod 755 /usr/local/bin/ffmpeg",
    );
    let hung = setup(&c, "--timeout 5");
    assert_eq!(hung.code, 1, "{hung}");
    assert!(hung.secs < 40.0, "{hung}");
    no_failure(&hung, &["pi3", "pi2"]);
    assert_eq!(hung.counts("box")[2], 1, "{hung}");
    assert!(hung.stdout.contains("unreachable: [box] => no answer within 5 s"), "{hung}");
    wait_until("the hanging command is stopped", Duration::from_secs(10), || {
        bx.pids_matching("sleep 4242").is_empty()
    });
    bx.exec_ok("rm /usr/local/bin/ffmpeg");
    bx.freeze();
    let frozen = setup(&c, "--timeout 5");
    bx.thaw();
    assert_eq!(frozen.code, 1, "{frozen}");
    assert!(frozen.secs < 40.0, "{frozen}");
    no_failure(&frozen, &["pi3", "pi2"]);
    assert_eq!(frozen.counts("box")[2], 1, "{frozen}");

    // 8. SIGINT (setup) and SIGTERM (facts) mid-run: a clear line, exit 1,
    // no ssh client or master left, no control directory left.
    bx.exec_ok(
        "printf '#!/bin/sh\\nexec sleep 4343\\n' > /usr/local/bin/ffmpeg && chmod 755 /usr/local/bin/ffmpeg",
    );
    let busy = || !bx.pids_matching("sleep 4343").is_empty();
    let uid = pi3.exec_ok("id -u pi").trim().to_string();
    let control_dirs = || pi3.exec_ok(&format!("ls -A /tmp/dffmpeg-{uid} | grep -c ssh-connection || true"));
    // The hanging command is left behind on box (sshd does not signal a
    // session without a terminal when its channel closes): stopped here.
    let unhang = || {
        for pid in bx.pids_matching("sleep 4343") {
            // SAFETY: kill(2) on a pid just seen.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        wait_until("the hanging command is gone", Duration::from_secs(5), || !busy());
    };
    for (args, sig, name) in
        [("setup", "--timeout 600", libc::SIGINT, "SIGINT"), ("facts", "", libc::SIGTERM, "SIGTERM")]
            .map(|(c, x, s, n)| (format!("{c} {INVENTORY} {x}"), s, n))
    {
        let (r, after) = signalled(&c, &args, busy, sig);
        assert_eq!(r.code, 1, "{r}");
        assert!(r.stderr.contains(&format!("interrupted by {name}")), "{r}");
        assert!(after < Duration::from_secs(10), "{after:?}");
        wait_until("no ssh left after the signal", Duration::from_secs(3), || ssh_left(&pi3).is_empty());
        assert_eq!(control_dirs().trim(), "0", "control directories left");
        unhang();
    }
    // SIGKILL: nothing can run at exit; the clients die with dffmpeg, the
    // masters within their linger time; the next dffmpeg removes their
    // directories.
    let (_, _) = signalled(&c, &format!("facts {INVENTORY}"), busy, libc::SIGKILL);
    wait_until("no ssh left after SIGKILL", Duration::from_secs(20), || ssh_left(&pi3).is_empty());
    unhang();
    bx.exec_ok("rm /usr/local/bin/ffmpeg");
    assert_ne!(control_dirs().trim(), "0", "a killed dffmpeg leaves its directories");
    pi3.exec_ok(&format!("touch -d '-5 min' /tmp/dffmpeg-{uid}/.ssh-connection*"));
    let facts = dff(&c, &format!("facts {INVENTORY}"), None);
    assert_eq!(facts.code, 0, "{facts}");
    assert_eq!(control_dirs().trim(), "0", "dead masters' directories removed");

    // 9. `dffmpeg facts` prints node text without escape sequences.
    let os = String::from_utf8_lossy(&read(&bx, "/etc/os-release")).into_owned();
    write(
        &bx,
        "/etc/os-release",
        os.replace("VERSION_CODENAME=trixie", "VERSION_CODENAME=\"trixie\u{1b}]0;pwned\u{7}\"").as_bytes(),
    );
    let facts = dff(&c, &format!("facts {INVENTORY}"), None);
    write(&bx, "/etc/os-release", os.as_bytes());
    assert_eq!(facts.code, 0, "{facts}");
    assert!(facts.stdout.contains("debian/trixie") && !facts.stdout.contains('\u{1b}'), "{:?}", facts.stdout);
    assert!(Path::new(&c.shared).exists());
    eprintln!("whole test {:.1} s", t0.elapsed().as_secs_f64());
}

/// dffmpeg as ssh's askpass program answers a password prompt with the
/// line on its stdin, and nothing else.
#[test]
fn dffmpeg_answers_only_password_prompts_as_askpass() {
    use std::io::Write;
    let ask = |prompt: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dffmpeg"))
            .arg(prompt)
            .env("DFFMPEG_ASKPASS", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("dffmpeg");
        // Not read at all for other prompts (a broken pipe then).
        let _ = child.stdin.take().expect("stdin").write_all(b"s3cret pass\n");
        child.wait_with_output().expect("wait")
    };
    let out = ask("pi@198.18.1.2's password: ");
    assert!(out.status.success());
    assert_eq!(out.stdout, b"s3cret pass\n");
    let out = ask("Are you sure you want to continue connecting (yes/no/[fingerprint])?");
    assert!(!out.status.success() && out.stdout.is_empty());
}
