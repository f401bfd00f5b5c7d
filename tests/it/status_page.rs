//! What the cluster is doing, seen from outside: a real `dffmpeg transcode
//! --watch` on a `host: local` inventory with `cluster.watch.http`, a
//! damaged file and a clip dropped into the watched folder, and the status
//! read by `dffmpeg status --json` and by real headless Chromium on the
//! page (in progress with its node, then done; the failure kept after the
//! service stopped).
//!
//! The clip stays "in progress" for as long as the test looks at it: every
//! process the service started is stopped (SIGSTOP) once its first chunk
//! started, and continued afterwards.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::media::*;
use crate::common::run::*;

/// Patience for anything the test waits for (never a condition itself).
const PATIENCE: Duration = Duration::from_secs(180);
const ARGS: &[&str] = &["-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac"];

/// A port nobody listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The watch service: its process and its JSON events as they come.
struct Service {
    child: Child,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Service {
    fn start(d: &Path, inv: &Path, state: &Path) -> Service {
        let mut child = dffmpeg()
            .env("XDG_STATE_HOME", state)
            .args(["transcode", "-I"])
            .arg(inv)
            .args(["--json", "--settle", "0.5", "--watch", "-O"])
            .arg(d.join("output"))
            .arg(d.join("upload"))
            .args(ARGS)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dffmpeg starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(e) = serde_json::from_str::<Value>(&line) {
                    if tx.send(e).is_err() {
                        break;
                    }
                }
            }
        });
        Service { child, events, seen: Vec::new() }
    }

    /// The first event (from now on) for which `want` holds.
    fn wait_until(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let e = self
                .events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what}; events so far: {:#?}", self.seen));
            self.seen.push(e.clone());
            if want(&e) {
                return e;
            }
        }
    }

    /// The first event (from now on) of kind `event` about the file `name`.
    fn wait_for(&mut self, event: &str, name: &str) -> Value {
        self.wait_until(&format!("{event} of {name}"), |e| {
            let about = |k: &str| e[k].as_str().is_some_and(|s| s.ends_with(name));
            e["event"] == event && (about("input") || about("output"))
        })
    }
}

impl Drop for Service {
    /// A failed test leaves no service running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dffmpeg status --json` with this state directory.
fn status(state: &Path) -> Value {
    let out =
        ok(dffmpeg().env("XDG_STATE_HOME", state).args(["status", "--json"]).output().unwrap(), "status");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}"))
}

/// Poll `dffmpeg status --json` until `want` holds (the status of chunk
/// traffic is written every 2 s).
fn status_until(state: &Path, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = status(state);
        if want(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "status never showed {what}: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs (apt-get install chromium)");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The page's DOM as Chromium built it.
fn dom(url: &str) -> String {
    String::from_utf8_lossy(&chromium(&["--dump-dom"], url).stdout).into_owned()
}

/// A screenshot of the page, kept in `$DFFMPEG_SCREENSHOTS` when set.
fn screenshot(url: &str, file: &Path) {
    chromium(&["--window-size=1200,1300", &format!("--screenshot={}", file.display())], url);
    let png = std::fs::read(file).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    if let Some(dir) = std::env::var_os("DFFMPEG_SCREENSHOTS") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(file, PathBuf::from(dir).join(file.file_name().unwrap()));
    }
}

/// The element of `dom` with `id`, up to the end of its table or paragraph.
fn part<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let rest = &dom[start..];
    let end = rest.find("</table>").or_else(|| rest.find("</p>")).unwrap_or(rest.len());
    &rest[..end]
}

/// Every process below `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let after = stat.rfind(')').map(|i| &stat[i + 1..]).unwrap_or_default();
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|x| x.parse::<u32>().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

fn signal(pids: &[u32], sig: i32) {
    for p in pids {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(*p as libc::pid_t, sig) };
    }
}

/// Freeze the service's encoder: wait for its ffmpeg to exist, then stop
/// every process below the service (again, for any started meanwhile).
fn freeze(service: u32) -> Vec<u32> {
    let deadline = Instant::now() + PATIENCE;
    let ffmpeg =
        |p: &u32| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "ffmpeg");
    while !descendants(service).iter().any(ffmpeg) {
        assert!(Instant::now() < deadline, "no encoder ever started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stopped = Vec::new();
    for _ in 0..3 {
        let now: Vec<u32> = descendants(service).into_iter().filter(|p| !stopped.contains(p)).collect();
        signal(&now, libc::SIGSTOP);
        stopped.extend(now);
        std::thread::sleep(Duration::from_millis(50));
    }
    stopped
}

/// One raw HTTP exchange; the response's status line.
fn raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may answer (and close) before it read everything.
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

fn running_on<'a>(s: &'a Value, name: &str) -> Option<&'a Value> {
    s["transcodes"][0]["running"]
        .as_array()?
        .iter()
        .find(|f| f["input"].as_str().is_some_and(|i| i.ends_with(name)))
}

/// The test's folders and addresses.
struct Setup {
    d: PathBuf,
    up: PathBuf,
    state: PathBuf,
    inv: PathBuf,
    port: u16,
    url: String,
}

impl Setup {
    fn new() -> Setup {
        let d = workdir("status-page");
        let (up, state) = (d.join("upload"), d.join("state"));
        std::fs::create_dir_all(&up).unwrap();
        let port = free_port();
        let inv = write(
            &d,
            "inventory.yaml",
            &format!(
                "cluster:\n  storage: ssh\n  watch: {{ http: 127.0.0.1:{port} }}\n\
                 nodes:\n  here: {{ host: local, roles: [controller, compute, storage], slots: 1 }}\n"
            ),
        );
        let url = format!("http://127.0.0.1:{port}/");
        Setup { d, up, state, inv, port, url }
    }
}

#[test]
fn the_status_page_and_command_follow_a_watched_folder() {
    let w = Setup::new();
    let mut svc = Service::start(&w.d, &w.inv, &w.state);
    idle(&w, svc.child.id());
    a_damaged_file_fails(&w, &mut svc);
    a_clip_in_progress_then_done(&w, &mut svc);
    read_only(w.port);
    stopped(&w, svc);
    let _ = std::fs::remove_dir_all(&w.d);
}

/// Idle: the page is up, nothing is connected yet.
fn idle(w: &Setup, pid: u32) {
    let s =
        status_until(&w.state, "the service", |s| s["transcodes"].as_array().is_some_and(|t| !t.is_empty()));
    let t = &s["transcodes"][0];
    assert_eq!((t["pid"].as_u64(), t["mode"].as_str()), (Some(pid.into()), Some("watch")), "{s:#}");
    assert_eq!(t["page"], w.url.as_str());
    let page = dom(&w.url);
    assert!(page.contains("Watching") && page.contains("Not connected yet"), "{page}");
}

/// A damaged video: it fails, with its reason.
fn a_damaged_file_fails(w: &Setup, svc: &mut Service) {
    std::fs::write(w.up.join("broken.mp4"), b"not a video at all").unwrap();
    svc.wait_for("job_failed", "broken.mp4");
    let s = status(&w.state);
    let failed = &s["failed"][0];
    assert!(failed["input"].as_str().unwrap().ends_with("upload/broken.mp4"), "{s:#}");
    assert!(!failed["reason"].as_str().unwrap().is_empty(), "{s:#}");
}

/// A clip (moved in whole): held in progress while we look, then done.
fn a_clip_in_progress_then_done(w: &Setup, svc: &mut Service) {
    let src = w.d.join("clip.mp4");
    let args = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac"];
    clip_of("testsrc2=size=640x360:rate=25", &src, 12, true, &args);
    std::fs::rename(&src, w.up.join("clip.mp4")).unwrap();
    let job = svc.wait_for("job_start", "clip.mp4")["job"].clone();
    svc.wait_until("the clip's first chunk", |e| e["event"] == "chunk_start" && e["job"] == job);
    let frozen = freeze(svc.child.id());
    in_progress(w);
    signal(&frozen, libc::SIGCONT);
    // Done: the status file is current when the event is out.
    svc.wait_for("job_done", "clip.mp4");
    let s = status(&w.state);
    let t = &s["transcodes"][0];
    assert!(t["running"].as_array().unwrap().is_empty(), "{s:#}");
    assert!(t["done"][0]["input"].as_str().unwrap().ends_with("clip.mp4"), "{s:#}");
    assert_eq!((t["counts"]["done"].as_u64(), t["counts"]["failed"].as_u64()), (Some(1), Some(1)));
    let here = &t["nodes"][0];
    assert!(here["chunks"].as_u64().unwrap() >= 1 && here["last_chunk_at"].is_number(), "{s:#}");
    let page = dom(&w.url);
    assert!(part(&page, "done").contains("clip.mp4"), "{page}");
    assert!(part(&page, "running").contains("No file is being transcoded"), "{page}");
    screenshot(&w.url, &w.d.join("status-done.png"));
}

/// The clip's encoder is stopped: status and page show it under way on
/// its node.
fn in_progress(w: &Setup) {
    let s = status_until(&w.state, "clip.mp4 encoding on here", |s| {
        running_on(s, "clip.mp4")
            .is_some_and(|f| f["nodes"][0]["node"] == "here" && f["nodes"][0]["running"] == 1)
    });
    assert_eq!(running_on(&s, "clip.mp4").unwrap()["stage"], "encoding", "{s:#}");
    let node = &s["transcodes"][0]["nodes"][0];
    assert_eq!(
        (node["name"].as_str(), node["state"].as_str(), node["slots"].as_u64()),
        (Some("here"), Some("up"), Some(1))
    );
    let page = dom(&w.url);
    let running = part(&page, "running");
    assert!(
        running.contains("clip.mp4")
            && running.contains("encoding")
            && running.contains("here: 0 done, <b>1 running</b>"),
        "{running}"
    );
    let nodes = part(&page, "nodes");
    assert!(nodes.contains("here") && nodes.contains(">up<"), "{nodes}");
    assert!(part(&page, "failed").contains("broken.mp4"), "{page}");
    screenshot(&w.url, &w.d.join("status-in-progress.png"));
}

/// Read-only, bounded.
fn read_only(port: u16) {
    let post = raw(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(raw(port, b"GET /nothing HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(raw(port, huge.as_bytes()), "HTTP/1.1 431 Request Header Fields Too Large");
    assert_eq!(raw(port, b"GET /status.json HTTP/1.1\r\nHost: localhost\r\n\r\n"), "HTTP/1.1 200 OK");
    // A page elsewhere that points its own name at 127.0.0.1 reads nothing.
    let rebound = raw(port, b"GET /status.json HTTP/1.1\r\nHost: evil.example:8080\r\n\r\n");
    assert_eq!(rebound, "HTTP/1.1 403 Forbidden");
}

/// Stopped: its status goes, the failure stays.
fn stopped(w: &Setup, mut svc: Service) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(svc.child.id() as libc::pid_t, libc::SIGTERM) };
    // Exit 1: a file of its run failed (broken.mp4).
    assert_eq!(svc.child.wait().unwrap().code(), Some(1));
    let s = status(&w.state);
    assert!(s["transcodes"].as_array().unwrap().is_empty(), "{s:#}");
    assert!(s["failed"][0]["input"].as_str().unwrap().ends_with("broken.mp4"), "{s:#}");
    assert_eq!(std::fs::read_dir(w.state.join("dffmpeg/status")).unwrap().count(), 0);
    let text = ok(dffmpeg().env("XDG_STATE_HOME", &w.state).arg("status").output().unwrap(), "status");
    assert!(text.contains("No transcode is running") && text.contains("broken.mp4"), "{text}");
}
