//! The SSH transport and `dffmpeg facts` against real sshd on test hosts
//! (network namespaces, see tests/it/common/lab.rs). Needs root.
//! Labs: 198.18.31.0/24, 198.18.32.0/24, 198.18.33.0/24.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::lab::{Host, HostOpts, Lab};
use crate::common::run::write;
use dffmpeg::inventory::{self, Role};
use dffmpeg::remote::{self, ConnectOptions, SshError, Transport, PID_PREFIX};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn node(name: &str, ip: &str, key: &Path) -> inventory::Node {
    inventory::Node {
        name: name.into(),
        host: inventory::Host::Remote(ip.into()),
        port: 22,
        user: Some("root".into()),
        roles: vec![Role::Compute],
        slots: None,
        identity_file: Some(key.to_path_buf()),
        become_root: false,
    }
}

fn options(known_hosts: &Path, strict: bool) -> ConnectOptions {
    let mut o = ConnectOptions::new(strict).expect("connect options");
    o.known_hosts = known_hosts.to_path_buf();
    o
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().filter(|l| !l.trim().is_empty()).count()).unwrap_or(0)
}

/// Whether a process matching `pattern` runs (pgrep sees every process of
/// the machine, so patterns are unique to each test).
fn running(host: &Host, pattern: &str) -> bool {
    host.exec(&format!("pgrep -f '{pattern}' >/dev/null")).status.success()
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Spawn `argv` on the node with piped stdio; returns the child and the
/// remote pid read from the first stderr line.
async fn spawn_with_pid(
    node: &remote::Node,
    argv: &[String],
) -> (tokio::process::Child, u32, BufReader<tokio::process::ChildStderr>) {
    let mut child = node
        .command(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ssh");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    err.read_line(&mut first).await.expect("pid line");
    let pid = first
        .trim()
        .strip_prefix(PID_PREFIX)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid line, got {first:?}"));
    (child, pid, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_transport() {
    let mut lab = Lab::new("sshtr", 31);
    let a = lab.add_host("a", HostOpts::default());
    let key = lab.client_key().to_path_buf();
    let tmp = tempfile::tempdir().expect("tempdir");
    let kh = tmp.path().join("known_hosts");
    let inv_a = node("a", &a.ip, &key);

    // Trust on first use: the key is added to dffmpeg's file.
    assert_eq!(lines(&kh), 0);
    let n = remote::connect(&inv_a, &options(&kh, false)).await.expect("connect");
    assert!(!n.is_local());
    assert_eq!(n.name(), "a");
    assert!(lines(&kh) >= 1, "host key recorded in {}", kh.display());
    assert!(n.check().await);

    // Hostile arguments arrive intact and nothing runs.
    let hostile = [
        "a b'$(touch /tmp/pwned);c",
        "ünïcødé 视频 $HOME `touch /tmp/pwned2` \"q\" \\ ; | & *",
        "",
        "-n",
        "new\nline",
    ];
    let mut words = vec!["printf", "%s\\0"];
    words.extend(hostile);
    let out = remote::run(&n, &argv(&words)).await.expect("run printf");
    assert!(out.success(), "printf failed: {}", out.stderr);
    let got: Vec<String> = String::from_utf8(out.stdout)
        .expect("utf-8 back")
        .split_terminator('\0')
        .map(str::to_string)
        .collect();
    assert_eq!(got, hostile);
    assert!(!out.stderr.contains(PID_PREFIX), "pid line is stripped");
    for f in ["/tmp/pwned", "/tmp/pwned2"] {
        assert!(!a.exec(&format!("test -e {f}")).status.success(), "{f} on a");
        assert!(!Path::new(f).exists(), "{f} here");
    }

    // Exit status and stderr come back.
    let out = remote::run(&n, &argv(&["sh", "-c", "echo oops >&2; exit 3"])).await.expect("run");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stderr, "oops\n");

    // 10 MB stdin -> remote cat -> stdout, intact.
    let data: Vec<u8> =
        (0..10 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut child = n
        .command(&argv(&["cat"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn cat");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let input = data.clone();
    let writer = tokio::spawn(async move {
        stdin.write_all(&input).await.expect("write");
        drop(stdin);
    });
    let mut back = Vec::new();
    stdout.read_to_end(&mut back).await.expect("read");
    writer.await.expect("writer");
    assert!(child.wait().await.expect("wait").success());
    assert_eq!(back.len(), data.len());
    assert!(back == data, "streamed bytes differ");

    // Many commands at once over the one connection.
    let cmds: Vec<Vec<String>> = (0..8).map(|i| argv(&["echo", &format!("n{i}")])).collect();
    let many: Vec<_> = cmds.iter().map(|c| remote::run(&n, c)).collect();
    for (i, out) in futures_join(many).await.into_iter().enumerate() {
        let out = out.expect("parallel run");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("n{i}\n"));
    }

    // kill(pid) stops a remote process and its process group.
    let (mut child, pid, _err) =
        spawn_with_pid(&n, &argv(&["sh", "-c", "sleep 1013 & sleep 1014; wait", "x"])).await;
    wait_until("sleeps start", Duration::from_secs(5), || {
        running(&a, "sleep 101[3]") && running(&a, "sleep 101[4]")
    })
    .await;
    assert!(a.exec(&format!("kill -0 {pid}")).status.success());
    let t = Instant::now();
    n.kill(pid).await;
    assert!(t.elapsed() < Duration::from_secs(5), "kill took {:?}", t.elapsed());
    wait_until("remote sleeps gone", Duration::from_secs(5), || !running(&a, "sleep 101[34]")).await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("local ssh client ends after the remote kill")
        .expect("wait");
    assert!(!status.success());

    // A process that ignores TERM is killed anyway.
    let (mut child, pid, _err) =
        spawn_with_pid(&n, &argv(&["sh", "-c", "trap '' TERM; sleep 1015 & wait; sleep 1015", "x"])).await;
    wait_until("sleep starts", Duration::from_secs(5), || running(&a, "sleep 101[5]")).await;
    n.kill(pid).await;
    wait_until("TERM-proof process gone", Duration::from_secs(5), || {
        !a.exec(&format!("kill -0 {pid} 2>/dev/null")).status.success()
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    n.close().await;

    // Known key: strict mode connects.
    let n = remote::connect(&inv_a, &options(&kh, true)).await.expect("strict connect with a known key");
    n.close().await;

    // Strict mode refuses an unknown key, naming the node.
    let fresh = tmp.path().join("fresh_known_hosts");
    let e = remote::connect(&inv_a, &options(&fresh, true)).await.expect_err("strict refuses unknown");
    assert!(matches!(e, SshError::HostKeyUnknown { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("node a") && msg.contains(&a.ip), "{msg}");
    assert_eq!(lines(&fresh), 0, "strict mode adds nothing");

    // A changed host key is an error naming the node, also without --strict.
    a.exec_ok("rm -f /etc/ssh/ssh_host_*; ssh-keygen -A >/dev/null");
    let e = remote::connect(&inv_a, &options(&kh, false)).await.expect_err("changed key refused");
    assert!(matches!(e, SshError::HostKeyChanged { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("host key changed: node a"), "{msg}");
    assert!(msg.contains("ssh-keygen -R"), "{msg}");

    // An address where no host answers: a clear error within seconds.
    let ghost = node("ghost", "198.18.31.250", &key);
    let t = Instant::now();
    let e = remote::connect(&ghost, &options(&kh, false)).await.expect_err("nobody there");
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    assert!(e.is_unreachable(), "{e}");
    assert!(e.to_string().starts_with("unreachable: node ghost"), "{e}");

    // A key the node does not accept.
    let other_key = tmp.path().join("other_key");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .status()
        .expect("ssh-keygen");
    assert!(ok.success());
    let e = remote::connect(&node("a", &a.ip, &other_key), &options(&fresh, false))
        .await
        .expect_err("wrong key refused");
    assert!(matches!(e, SshError::Auth { .. }), "{e}");
    assert!(e.to_string().contains("node a"), "{e}");

    // connect_all: in order, local without SSH, typed errors naming the node.
    let inv = inventory::parse(
        &format!(
            "defaults: {{ user: root, identity_file: '{}' }}\nnodes:\n  here: {{ host: local, roles: [controller] }}\n  a: {{ host: {}, roles: [compute] }}\n  ghost: {{ host: 198.18.31.251, roles: [compute] }}\n",
            key.display(),
            a.ip
        ),
        "inv.yaml",
    )
    .expect("inventory");
    let all = remote::connect_all(&inv.nodes, &options(&fresh, false)).await;
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["here", "a", "ghost"]);
    assert!(matches!(all[0].1.as_deref(), Ok(remote::Node::Local(_))));
    assert!(matches!(all[1].1.as_deref(), Ok(remote::Node::Ssh(_))));
    match &all[2].1 {
        Err(e) => assert!(e.is_unreachable() && e.to_string().starts_with("unreachable: node ghost"), "{e}"),
        Ok(_) => panic!("ghost connected"),
    }
    let facts = dffmpeg::facts::gather(all[1].1.as_ref().expect("a").as_ref(), None).await;
    let facts = facts.expect("facts of a");
    assert!(facts.cores >= 1 && !facts.arch.is_empty());
    drop(all);
    drop(lab);
}

/// Join futures without the futures crate.
async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let mut out = Vec::new();
    let mut pinned: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    for r in results {
        out.push(r.expect("all ready"));
    }
    out
}

fn dffmpeg(args: &[&str], known_hosts: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dffmpeg"))
        .args(args)
        .env("DFFMPEG_KNOWN_HOSTS", known_hosts)
        .output()
        .expect("run dffmpeg")
}

#[test]
fn facts_command() {
    let mut lab = Lab::new("sshfc", 32);
    let a = lab.add_host("a", HostOpts::default());
    let b = lab.add_host("b", HostOpts { cpus: Some(0.5), ..Default::default() });
    let key = lab.client_key().to_path_buf();
    let tmp = tempfile::tempdir().expect("tempdir");
    let kh = tmp.path().join("known_hosts");
    let head = format!(
        "cluster: {{ storage: ssh }}\ndefaults: {{ user: root, identity_file: '{}' }}\nnodes:\n  pi3: {{ host: {}, roles: [controller, compute] }}\n  pi2: {{ host: {}, roles: [compute] }}\n",
        key.display(),
        a.ip,
        b.ip
    );
    let inv = write(tmp.path(), "inv.yaml", &head);
    let inv_s = inv.to_str().expect("utf-8 path");

    let out = dffmpeg(&["facts", inv_s, "--encoder", "mpeg4"], &kh);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let rows: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert_eq!(rows[0][..3], ["NODE", "HOST", "REACHABLE"], "{stdout}");
    assert!(rows[0].contains(&"MPEG4"), "{stdout}");
    for (row, (name, ip)) in rows[1..].iter().zip([("pi3", &a.ip), ("pi2", &b.ip)]) {
        assert_eq!(row[..4], [name, ip.as_str(), "yes", std::env::consts::ARCH]);
    }
    assert!(lines(&kh) >= 2, "both host keys trusted on first use");

    let out = dffmpeg(&["facts", inv_s, "--json", "--encoder", "mpeg4"], &kh);
    assert_eq!(out.status.code(), Some(0));
    let objs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(objs.len(), 2);
    assert_eq!(objs[0]["node"], "pi3");
    assert_eq!(objs[1]["node"], "pi2");
    for o in &objs {
        assert_eq!(o["reachable"], true, "{o}");
        assert_eq!(o["has_encoder"], true, "{o}");
        assert!(o["cores"].as_u64().unwrap_or(0) >= 1, "{o}");
        // The version word of `ffmpeg version 5.1.6-0+deb12u1 Copyright ...`.
        let v = o["ffmpeg_version"].as_str().unwrap_or("");
        assert!(v.chars().next().is_some_and(|c| c.is_ascii_digit()) && !v.contains(' '), "{o}");
        assert!(o["arch"].as_str() == Some(std::env::consts::ARCH) && o["os_id"].is_string(), "{o}");
        assert!(o.get("error").is_none(), "{o}");
    }

    // One node unreachable: both others still reported, exit 1.
    let with_ghost = format!("{head}  ghost: {{ host: 198.18.32.250, roles: [compute] }}\n");
    let inv2 = write(tmp.path(), "inv2.yaml", &with_ghost);
    let t = Instant::now();
    let out = dffmpeg(&["facts", inv2.to_str().expect("path")], &kh);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let rows: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    assert_eq!(rows[1][2], "yes");
    assert_eq!(rows[2][2], "yes");
    assert_eq!(rows[3][..3], ["ghost", "198.18.32.250", "no"]);
    assert!(stderr.contains("unreachable: node ghost (198.18.32.250)"), "{stderr}");

    // A node whose host key changed is reported, naming it.
    b.exec_ok("rm -f /etc/ssh/ssh_host_*; ssh-keygen -A >/dev/null");
    let out = dffmpeg(&["facts", inv_s], &kh);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("host key changed: node pi2"), "{stderr}");

    // Inventory errors: exit 2 with file:line:column.
    let bad =
        write(tmp.path(), "bad.yaml", "nodes:\n  pi3: { hots: 1.2.3.4, roles: [controller, compute] }\n");
    let out = dffmpeg(&["facts", bad.to_str().expect("path")], &kh);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:2:10: unknown key `hots` in node `pi3`; did you mean `host`?",
            bad.display()
        )),
        "{stderr}"
    );
    drop(lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dying_node_is_noticed_in_seconds() {
    let mut lab = Lab::new("sshdd", 33);
    let a = lab.add_host("a", HostOpts::default());
    let b = lab.add_host("b", HostOpts::default());
    let key = lab.client_key().to_path_buf();
    let tmp = tempfile::tempdir().expect("tempdir");
    let kh = tmp.path().join("known_hosts");
    let opts = options(&kh, false);
    let na = remote::connect(&node("a", &a.ip, &key), &opts).await.expect("connect a");
    let nb = remote::connect(&node("b", &b.ip, &key), &opts).await.expect("connect b");
    let (mut ca, _, _ea) = spawn_with_pid(&na, &argv(&["sleep", "1031"])).await;
    let (mut cb, _, _eb) = spawn_with_pid(&nb, &argv(&["sleep", "1032"])).await;

    // a: its sshd and everything under it are killed (the kernel still
    // closes the connection).
    a.kill();
    // b: goes silent, as when a cable is pulled or the power is cut: only
    // the keepalive can notice.
    b.exec_ok("ip link set eth0 down");
    let t = Instant::now();
    for (name, child) in [("a", &mut ca), ("b", &mut cb)] {
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .unwrap_or_else(|_| panic!("the command on {name} ends when its node dies"))
            .expect("wait");
        assert!(!status.success());
        eprintln!("command on {name} ended {:?} after the node died", t.elapsed());
    }
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    for n in [&na, &nb] {
        wait_until("master notices", Duration::from_secs(20), || not_connected(n)).await;
        // New commands fail fast instead of reconnecting or hanging.
        let t = Instant::now();
        let out = remote::run(n, &argv(&["true"])).await.expect("run ssh");
        assert_eq!(out.status.code(), Some(255));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let e = dffmpeg::facts::gather(n, None).await.expect_err("facts fail").to_string();
        assert!(e.starts_with(&format!("unreachable: node {}", n.name())), "{e}");
    }
    drop(lab);
}

/// `!n.check()` from a sync closure.
fn not_connected(n: &remote::Node) -> bool {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(async { !n.check().await }))
}
