//! `transcode --watch DIR... -O OUT`: the shared `upload/` tree as a
//! queue. A video that is complete (untouched for `--settle` seconds, see
//! `inputs.rs`) and whose output does not exist yet joins the running
//! batch — same cluster connection, same queue. A bad file is reported
//! once and left alone; a lost node leaves, the others go on. SIGTERM (or
//! Ctrl-C) stops it cleanly: attempts in flight are stopped and their jobs
//! resume at the next start.
//!
//! Finding new files costs nothing while nothing arrives: the kernel
//! reports each change (inotify, one watch per directory of the tree; a
//! new subdirectory is watched as it appears, then walked), and a file
//! still being written is looked at again when it may have settled (one
//! timer for the earliest, [`Pending`]) — the tree is not walked for it.
//! The whole tree is walked at the start, then every 5 minutes as a
//! safety net (for what the kernel cannot report) and at once when the
//! kernel's event queue overflowed. Where notification is not to be had
//! — inotify unavailable or its limits reached (with a warning naming
//! `fs.inotify.max_user_watches`), a network file system (NFS, SMB, FUSE,
//! 9p: files written there from another machine are not reported), an
//! input directory that is gone for now — that tree is walked every 2
//! seconds instead, as before. A folder that cannot be read is named once
//! and left out; its files come when it can be read (its change of mode is
//! reported too).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use inotify::{EventMask, EventOwned, Inotify, WatchDescriptor, WatchMask};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::transcode::batch::FileOutcome;
use crate::transcode::events::{Event, Sender};
use crate::transcode::inputs::{self, Entry, FileSpec, Outputs};
use crate::transcode::Work;

/// The safety net: every tree is walked this often.
const RESCAN_EVERY: Duration = Duration::from_secs(300);
/// A tree without change notification is walked this often.
const POLL_EVERY: Duration = Duration::from_secs(2);

pub async fn run(work: &Work<'_>, dirs: &[PathBuf]) -> Vec<FileOutcome> {
    let Some(out) = work.args.output_dir.clone() else { return Vec::new() };
    let ext = work.opts.user.format.as_deref().and_then(inputs::extension_for).map(str::to_string);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let scanner = Scanner::new(dirs, out, ext, work.settle, tx, work.events.clone());
    let scanner = tokio::spawn(scan(scanner, work.stop.clone()));
    // The batch starts with the first file (the cluster is connected then).
    let head = tokio::select! {
        f = rx.recv() => f,
        _ = stopped(work.stop.clone()) => None,
    };
    let outcomes = match head {
        Some(head) => work.run(head, rx, 0).await,
        None => Vec::new(),
    };
    scanner.abort();
    outcomes
}

async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    // A closed channel: nobody can stop us any more; wait forever.
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Send every new complete video of the trees once, until stopped.
async fn scan(mut s: Scanner, stop: tokio::sync::watch::Receiver<bool>) {
    for i in 0..s.roots.len() {
        s.walk_root(i).await;
    }
    while !s.closed {
        let at = s.wake_at();
        let wake = tokio::select! {
            r = read(s.notify.as_mut()) => Some(r),
            _ = tokio::time::sleep_until(at) => None,
            _ = stopped(stop.clone()) => return,
        };
        match wake {
            Some(Ok(events)) => s.on_events(events).await,
            Some(Err(e)) => s.lose_notify(&e),
            None => s.on_timer().await,
        }
    }
}

async fn read(n: Option<&mut Notify>) -> io::Result<Vec<EventOwned>> {
    match n {
        Some(n) => n.read().await,
        None => std::future::pending().await,
    }
}

/// Files still being written: each is looked at again once it may have
/// settled (pure: time passed in).
#[derive(Debug, Default)]
pub struct Pending {
    /// File → (when it may have settled, the input it lies in).
    due: BTreeMap<PathBuf, (SystemTime, usize)>,
}

impl Pending {
    /// `path` (of input `root`) last changed at `changed`: look at it again
    /// once untouched for `settle` (what is known now replaces what was).
    pub fn wait(&mut self, path: PathBuf, root: usize, changed: SystemTime, settle: Duration) {
        self.due.insert(path, (changed + settle, root));
    }

    pub fn forget(&mut self, path: &Path) {
        self.due.remove(path);
    }

    /// When the earliest file may have settled.
    pub fn next(&self) -> Option<SystemTime> {
        self.due.values().map(|(t, _)| *t).min()
    }

    /// The files that may have settled by `now`, taken out.
    pub fn take_due(&mut self, now: SystemTime) -> Vec<(PathBuf, usize)> {
        let due: Vec<(PathBuf, usize)> =
            self.due.iter().filter(|(_, (t, _))| *t <= now).map(|(p, (_, r))| (p.clone(), *r)).collect();
        for (p, _) in &due {
            self.due.remove(p);
        }
        due
    }
}

/// The kernel's change notification over the directories of the trees.
struct Notify {
    fd: AsyncFd<Inotify>,
    /// Each watch: its directory and the input it lies in.
    dirs: HashMap<i32, (WatchDescriptor, PathBuf, usize)>,
    buf: Vec<u8>,
}

/// What a directory's watch reports: anything that may make or change a
/// file in it, and its own end.
fn mask(follow: bool) -> WatchMask {
    let m = WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::CREATE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::ONLYDIR;
    // A subdirectory is watched as found, not through a link put in its
    // place meanwhile; the input itself may be a link.
    if follow {
        m
    } else {
        m | WatchMask::DONT_FOLLOW
    }
}

impl Notify {
    fn new() -> io::Result<Notify> {
        // SAFETY: the Inotify owns its descriptor, which stays open (and
        // the same) until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register_with_interest(Inotify::init()?, Interest::READABLE)? };
        Ok(Notify { fd, dirs: HashMap::new(), buf: vec![0; 64 * 1024] })
    }

    /// Watch `dir` of input `root`: its id, None when it is gone or no
    /// directory any more; an error when the kernel's limits are reached.
    fn watch(&mut self, dir: &Path, root: usize, follow: bool) -> io::Result<Option<i32>> {
        match self.fd.get_ref().watches().add(dir, mask(follow)) {
            Ok(wd) => {
                let id = wd.get_watch_descriptor_id();
                self.dirs.insert(id, (wd, dir.to_path_buf(), root));
                Ok(Some(id))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::ENOMEM | libc::EMFILE)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Stop watching the directories of `root` not in `keep` (moved out
    /// of the tree, or below a directory that is no more).
    fn prune(&mut self, root: usize, keep: &HashSet<i32>) {
        let gone: Vec<i32> =
            self.dirs.iter().filter(|(id, d)| d.2 == root && !keep.contains(id)).map(|(id, _)| *id).collect();
        for id in gone {
            if let Some((wd, _, _)) = self.dirs.remove(&id) {
                // Already gone with its directory: nothing to undo.
                let _ = self.fd.get_ref().watches().remove(wd);
            }
        }
    }

    async fn read(&mut self) -> io::Result<Vec<EventOwned>> {
        loop {
            let mut ready = self.fd.readable_mut().await?;
            let buf = &mut self.buf;
            let read =
                ready.try_io(|fd| fd.get_mut().read_events(buf).map(|e| e.map(|e| e.to_owned()).collect()));
            if let Ok(events) = read {
                return events;
            }
        }
    }
}

/// One input of the watch.
struct Root {
    /// As named on the command line.
    input: PathBuf,
    /// Its canonical path, once it could be read (the tree links may
    /// point into).
    canon: Option<PathBuf>,
    /// On a network file system: never notified.
    remote: bool,
    /// When it is walked next.
    next: Instant,
}

struct Scanner {
    roots: Vec<Root>,
    out: PathBuf,
    ext: Option<String>,
    settle: Duration,
    /// Files taken (sent, done already, or no video) and links named:
    /// each once.
    seen: HashSet<PathBuf>,
    pending: Pending,
    notify: Option<Notify>,
    /// Folders said to be unreadable (once each).
    unreadable: HashSet<PathBuf>,
    tx: mpsc::UnboundedSender<FileSpec>,
    events: Sender,
    /// The batch is over: nobody takes files any more.
    closed: bool,
}

impl Scanner {
    fn new(
        dirs: &[PathBuf],
        out: PathBuf,
        ext: Option<String>,
        settle: Duration,
        tx: mpsc::UnboundedSender<FileSpec>,
        events: Sender,
    ) -> Scanner {
        let now = Instant::now();
        let roots = dirs
            .iter()
            .map(|d| Root { input: d.clone(), canon: None, remote: remote(d), next: now })
            .collect::<Vec<_>>();
        let mut s = Scanner {
            roots,
            out,
            ext,
            settle,
            seen: HashSet::new(),
            pending: Pending::default(),
            notify: None,
            unreadable: HashSet::new(),
            tx,
            events,
            closed: false,
        };
        match Notify::new() {
            Ok(n) => s.notify = Some(n),
            Err(e) => s.lose_notify(&e),
        }
        for r in s.roots.iter().filter(|r| r.remote) {
            let message = format!(
                "{} is on a network file system: files written there by other machines are not \
                 reported by its kernel; it is walked every {} s",
                r.input.display(),
                POLL_EVERY.as_secs()
            );
            s.warn(message);
        }
        s
    }

    fn warn(&self, message: String) {
        // The reporter (which prints names without escapes) outlives the watch.
        let _ = self.events.send(Event::Warning { message });
    }

    /// No change notification (any more): every tree is walked often.
    fn lose_notify(&mut self, e: &io::Error) {
        self.notify = None;
        let soon = Instant::now() + POLL_EVERY;
        for r in &mut self.roots {
            r.next = r.next.min(soon);
        }
        let limit = match e.raw_os_error() {
            Some(libc::ENOSPC) => "; raise sysctl fs.inotify.max_user_watches",
            Some(libc::EMFILE) => "; raise sysctl fs.inotify.max_user_instances",
            _ => "",
        };
        let every = POLL_EVERY.as_secs();
        self.warn(format!(
            "no change notification for the watched folders (inotify: {e}{limit}): they are walked every {every} s instead"
        ));
    }

    fn notified(&self, i: usize) -> bool {
        self.notify.is_some() && !self.roots[i].remote
    }

    /// When something is due: a walk, or a file that may have settled.
    fn wake_at(&self) -> Instant {
        let walk = self.roots.iter().map(|r| r.next).min().unwrap_or_else(|| Instant::now() + RESCAN_EVERY);
        let settle = self
            .pending
            .next()
            .map(|t| Instant::now() + t.duration_since(SystemTime::now()).unwrap_or_default());
        settle.map_or(walk, |s| s.min(walk))
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        for i in 0..self.roots.len() {
            if self.roots[i].next <= now {
                self.walk_root(i).await;
            }
        }
        for (path, i) in self.pending.take_due(SystemTime::now()) {
            self.consider(path, i).await;
        }
    }

    async fn on_events(&mut self, events: Vec<EventOwned>) {
        // Several events may name one file (created, written, closed).
        let mut names = BTreeSet::new();
        for e in events {
            if e.mask.contains(EventMask::Q_OVERFLOW) {
                // Changes were lost: walk everything now.
                let now = Instant::now();
                self.roots.iter_mut().for_each(|r| r.next = now);
                continue;
            }
            let Some(n) = self.notify.as_mut() else { return };
            let id = e.wd.get_watch_descriptor_id();
            if e.mask.contains(EventMask::IGNORED) {
                // The directory is gone; an input is looked for until back.
                if let Some((_, dir, i)) = n.dirs.remove(&id) {
                    if dir == self.roots[i].input {
                        self.roots[i].next = Instant::now() + POLL_EVERY;
                    }
                }
                continue;
            }
            if let (Some((_, dir, i)), Some(name)) = (n.dirs.get(&id), e.name) {
                names.insert((dir.join(name), *i));
            }
        }
        for (path, i) in names {
            if self.closed {
                return;
            }
            self.consider(path, i).await;
        }
    }

    /// A name in a directory of input `i` was reported, or a pending file
    /// may have settled.
    async fn consider(&mut self, path: PathBuf, i: usize) {
        if self.seen.contains(&path) {
            return;
        }
        let Some(root) = self.roots[i].canon.clone() else { return };
        match inputs::entry(&path, &root, self.settle) {
            Entry::Dir => drop(self.walk_dir(&path, i).await),
            Entry::File => self.take(path, i).await,
            Entry::Unsettled(at) => self.pending.wait(path, i, at, self.settle),
            Entry::Outside => self.outside(path),
            Entry::Other => self.pending.forget(&path),
        }
    }

    /// Walk input `i` whole; next time in 5 minutes when it is notified,
    /// else in 2 s.
    async fn walk_root(&mut self, i: usize) {
        let input = self.roots[i].input.clone();
        let ok = match std::fs::metadata(&input) {
            Ok(m) if !m.is_dir() => {
                self.named(i).await;
                true
            }
            Ok(_) => match input.canonicalize() {
                Ok(canon) => {
                    self.roots[i].canon = Some(canon);
                    self.rewalk(i, &input).await
                }
                Err(_) => false,
            },
            // Gone for now (a directory that cannot be read may be back).
            Err(_) => false,
        };
        let every = if ok && self.notified(i) { RESCAN_EVERY } else { POLL_EVERY };
        self.roots[i].next = Instant::now() + every;
    }

    async fn rewalk(&mut self, i: usize, input: &Path) -> bool {
        let Some(made) = self.walk_dir(input, i).await else { return false };
        if let Some(n) = self.notify.as_mut().filter(|_| !self.roots[i].remote) {
            n.prune(i, &made);
        }
        true
    }

    /// Walk `dir` of input `i` (watching each directory before it is
    /// read) and take what is found: the watches made, None when the walk
    /// failed.
    async fn walk_dir(&mut self, dir: &Path, i: usize) -> Option<HashSet<i32>> {
        let root = self.roots[i].canon.clone()?;
        let input = self.roots[i].input.clone();
        let mut none = None;
        let notify = if self.roots[i].remote { &mut none } else { &mut self.notify };
        let (mut made, mut full) = (HashSet::new(), None);
        let walked = inputs::walk_below(dir, &root, Some(&self.out), self.settle, &mut |d| {
            let Some(n) = notify.as_mut().filter(|_| full.is_none()) else { return };
            match n.watch(d, i, d == input) {
                Ok(Some(id)) => {
                    made.insert(id);
                }
                Ok(None) => {}
                Err(e) => full = Some(e),
            }
        });
        if let Some(e) = full {
            self.lose_notify(&e);
        }
        let w = match walked {
            Ok(w) => w,
            Err(inputs::InputError::Io { path, cause }) => {
                self.cannot_read(path, &cause);
                return None;
            }
            Err(_) => return None,
        };
        for (d, e) in w.unreadable {
            self.cannot_read(d, &e);
        }
        for link in w.outside {
            self.outside(link);
        }
        for (path, at) in w.unsettled {
            if !self.seen.contains(&path) {
                self.pending.wait(path, i, at, self.settle);
            }
        }
        for path in w.files {
            self.take(path, i).await;
        }
        Some(made)
    }

    /// Said once per folder (one gone meanwhile is no news).
    fn cannot_read(&mut self, dir: PathBuf, e: &io::Error) {
        if e.kind() != io::ErrorKind::NotFound && self.unreadable.insert(dir.clone()) {
            self.warn(format!("cannot read {}: {e}; its files are left out", dir.display()));
        }
    }

    /// A file named on the command line: taken once, as it is.
    async fn named(&mut self, i: usize) {
        let input = self.roots[i].input.clone();
        if !self.seen.insert(input.clone()) {
            return;
        }
        let outputs = Outputs::Dir { dir: self.out.clone(), ext: self.ext.clone() };
        if let Ok(ex) = inputs::expand(&[input], &outputs, self.settle) {
            for f in ex.files {
                self.send(f).await;
            }
        }
    }

    /// A complete file below input `i`: sent once, unless its output
    /// exists or it is no video.
    async fn take(&mut self, path: PathBuf, i: usize) {
        self.pending.forget(&path);
        if self.closed || !self.seen.insert(path.clone()) {
            return;
        }
        let f = inputs::found_below(&self.roots[i].input, path, &self.out, self.ext.as_deref());
        self.send(f).await;
    }

    async fn send(&mut self, f: FileSpec) {
        if f.output.as_ref().is_some_and(|o| o.exists()) {
            return;
        }
        let Some(f) = inputs::if_video(f).await else { return };
        self.closed = self.tx.send(f).is_err();
    }

    fn outside(&mut self, link: PathBuf) {
        self.pending.forget(&link);
        if self.seen.insert(link.clone()) {
            self.warn(crate::transcode::outside_link(&link));
        }
    }
}

/// Whether `dir` lies on a file system that other machines write to,
/// whose changes from there this kernel does not report.
fn remote(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const NFS: u32 = 0x6969;
    const SMB: u32 = 0x517b;
    const CIFS: u32 = 0xff53_4d42;
    const SMB2: u32 = 0xfe53_4d42;
    const FUSE: u32 = 0x6573_5546;
    const V9FS: u32 = 0x0102_1997;
    const CEPH: u32 = 0x00c3_6400;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: all zeroes is a valid statfs, which the call fills from a
    // valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    // The magic numbers are 32 bits wide (f_type is wider on 64-bit).
    matches!(st.f_type as u32, NFS | SMB | CIFS | SMB2 | FUSE | V9FS | CEPH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_still_written_is_looked_at_when_it_may_have_settled() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = |n| Duration::from_secs(n);
        let settle = s(5);
        let mut p = Pending::default();
        assert_eq!(p.next(), None);
        p.wait("a.mp4".into(), 0, t0, settle);
        p.wait("b.mp4".into(), 1, t0 + s(2), settle);
        assert_eq!(p.next(), Some(t0 + s(5)), "the earliest");
        assert_eq!(p.take_due(t0 + s(4)), []);
        // Written again before its time: what is known now counts.
        p.wait("a.mp4".into(), 0, t0 + s(4), settle);
        assert_eq!(p.next(), Some(t0 + s(7)));
        assert_eq!(p.take_due(t0 + s(7)), [("b.mp4".into(), 1)]);
        assert_eq!(p.next(), Some(t0 + s(9)));
        p.forget(Path::new("a.mp4"));
        assert_eq!(p.next(), None, "gone, or taken: no timer");
        assert_eq!(p.take_due(t0 + s(100)), []);
    }
}
