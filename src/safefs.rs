//! Writing into directories that other users may write to, without ever
//! following a symbolic link that dffmpeg did not create.
//!
//! The shared directory's `work/` (writable by every compute node's user
//! through the `dffmpeg` group, over NFS) and an output folder such as
//! `output/` are places where someone else can plant a symlink under a name
//! dffmpeg is about to use. So every file the controller creates there is
//! reached through a [`Dir`]: an open directory handle, verified once (a
//! real directory, not a symlink, and for the directories dffmpeg owns,
//! owned by this user). Names inside it are opened with `O_NOFOLLOW`, new
//! files with `O_EXCL`, permissions change through the open handle, renames
//! replace a link instead of writing through it. Programs that write a file
//! themselves (ffmpeg) get a path through `/proc/PID/fd/N` of a file dffmpeg
//! has already created, so they write into that very file whatever the name
//! has become meanwhile.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    #[error("{path} is a symbolic link; refusing to use it (it was not created by dffmpeg: remove it)")]
    Symlink { path: PathBuf },
    #[error("{path} is not a directory")]
    NotDir { path: PathBuf },
    #[error("{path} belongs to uid {owner}, not to this user (uid {me}); refusing to use it")]
    Owner { path: PathBuf, owner: u32, me: u32 },
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SafeFsError + '_ {
    move |cause| SafeFsError::Io { path: path.to_path_buf(), cause }
}

/// The most [`Dir::read`] reads: the controller's own small records.
pub const READ_CAP: u64 = 16 << 20;

fn my_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// An open directory. Everything created in it is created through this
/// handle, so renaming or replacing the directory's own name afterwards
/// changes nothing.
#[derive(Debug)]
pub struct Dir {
    handle: File,
    /// The path it was opened at (for messages, and for the nodes, which
    /// see the shared directory at the same path).
    path: PathBuf,
}

impl Dir {
    /// Open a directory the user named (an output folder, the configured
    /// shared directory): symlinks in the path are the user's own choice.
    pub fn open(path: &Path) -> Result<Dir, SafeFsError> {
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err(path))?;
        Ok(Dir { handle, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `/proc/PID/fd/N/name`: `name` inside this very directory, for this
    /// process and for the programs it starts.
    pub fn fd_path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), self.handle.as_raw_fd())).join(name)
    }

    /// The entry's path as the user (and the nodes) see it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// An existing subdirectory, which must not be a symlink (any owner).
    pub fn open_dir(&self, name: &str) -> Result<Dir, SafeFsError> {
        let path = self.join(name);
        let handle = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.fd_path(name))
            .map_err(|e| classify_open(&path, e))?;
        Ok(Dir { handle, path })
    }

    /// A subdirectory (any owner), created if missing; never a symlink.
    pub fn ensure_dir(&self, name: &str) -> Result<Dir, SafeFsError> {
        match std::fs::create_dir(self.fd_path(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(SafeFsError::Io { path: self.join(name), cause: e }),
        }
        self.open_dir(name)
    }

    /// A subdirectory of this user's, created if missing: refused when the
    /// name is a symlink or a directory of someone else's. `mode` is set
    /// through the handle.
    pub fn own_dir(&self, name: &str, mode: u32) -> Result<Dir, SafeFsError> {
        let path = self.join(name);
        match std::fs::create_dir(self.fd_path(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(SafeFsError::Io { path, cause: e }),
        }
        let dir = self.open_dir(name)?;
        let meta = dir.handle.metadata().map_err(io_err(&path))?;
        if meta.uid() != my_uid() {
            return Err(SafeFsError::Owner { path, owner: meta.uid(), me: my_uid() });
        }
        use std::os::unix::fs::PermissionsExt;
        if meta.mode() & 0o7777 != mode {
            dir.handle.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io_err(&path))?;
        }
        Ok(dir)
    }

    /// A new file (`O_EXCL`: an existing name, a planted symlink included,
    /// is an error).
    pub fn create_new(&self, name: &str) -> Result<File, SafeFsError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.fd_path(name))
            .map_err(|e| classify_open(&self.join(name), e))
    }

    /// A new file under a fresh name starting with `prefix`, never one that
    /// exists already. Returns the file and its name.
    pub fn create_temp(&self, prefix: &str) -> Result<(File, String), SafeFsError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let name = format!("{prefix}.{}-{n}-{nanos:x}.tmp", std::process::id());
            match self.create_new(&name) {
                Ok(f) => return Ok((f, name)),
                Err(SafeFsError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::AlreadyExists => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A file of this user's, opened read-write and created when missing
    /// (a lock): refused when the name is a symlink or not a regular file.
    pub fn open_own_file(&self, name: &str) -> Result<File, SafeFsError> {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true).truncate(false).mode(0o644);
        self.open_checked(name, &mut o, 0, true)
    }

    /// A regular file of this user's, opened for appending (a log) and
    /// created when missing: refused when the name is a symlink.
    pub fn open_append(&self, name: &str) -> Result<File, SafeFsError> {
        let mut o = OpenOptions::new();
        o.append(true).create(true).mode(0o644);
        self.open_checked(name, &mut o, 0, true)
    }

    /// Open `name` with `opts` (plus `flags`), never through a link, and
    /// refuse anything but a regular file (of this user's, when `own`).
    fn open_checked(
        &self,
        name: &str,
        opts: &mut OpenOptions,
        flags: i32,
        own: bool,
    ) -> Result<File, SafeFsError> {
        let path = self.join(name);
        let f = opts
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | flags)
            .open(self.fd_path(name))
            .map_err(|e| classify_open(&path, e))?;
        let meta = f.metadata().map_err(io_err(&path))?;
        if !meta.is_file() {
            return Err(SafeFsError::Io { path, cause: std::io::Error::other("not a regular file") });
        }
        if own && meta.uid() != my_uid() {
            return Err(SafeFsError::Owner { path, owner: meta.uid(), me: my_uid() });
        }
        Ok(f)
    }

    /// The content of a regular file of at most [`READ_CAP`] bytes (a
    /// symlink, a FIFO or a device is an error, never a hang).
    pub fn read(&self, name: &str) -> Result<Vec<u8>, SafeFsError> {
        let path = self.join(name);
        let f = self.open_regular(name)?;
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(&f, READ_CAP + 1), &mut buf)
            .map_err(io_err(&path))?;
        if buf.len() as u64 > READ_CAP {
            return Err(SafeFsError::Io {
                path,
                cause: std::io::Error::other(format!("larger than {} KiB", READ_CAP >> 10)),
            });
        }
        Ok(buf)
    }

    /// An existing regular file, opened for reading: never through a link,
    /// and never blocking on a FIFO or device put under its name (opened
    /// non-blocking, then refused unless it is a regular file).
    pub fn open_regular(&self, name: &str) -> Result<File, SafeFsError> {
        self.open_checked(name, OpenOptions::new().read(true), libc::O_NONBLOCK, false)
    }

    /// Whether `name` is a regular file (not following a symlink).
    pub fn is_file(&self, name: &str) -> bool {
        std::fs::symlink_metadata(self.fd_path(name)).is_ok_and(|m| m.is_file())
    }

    /// Write `name` whole or not at all: a new temporary file, synced, then
    /// renamed over the name (replacing whatever was there, a link
    /// included, without following it), then the directory synced.
    pub fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), SafeFsError> {
        let (mut f, tmp) = self.create_temp(name)?;
        let written = f.write_all(data).and_then(|()| f.sync_all());
        if let Err(e) = written {
            self.remove_quietly(&tmp);
            return Err(SafeFsError::Io { path: self.join(&tmp), cause: e });
        }
        if let Err(e) = self.rename(&tmp, self, name) {
            self.remove_quietly(&tmp);
            return Err(e);
        }
        self.sync()
    }

    /// Rename `from` (in this directory) to `to` in `dest`. Neither name is
    /// followed if it is a link.
    pub fn rename(&self, from: &str, dest: &Dir, to: &str) -> Result<(), SafeFsError> {
        std::fs::rename(self.fd_path(from), dest.fd_path(to)).map_err(io_err(&dest.join(to)))
    }

    /// [`Dir::rename`], but never over an existing `to`: `Ok(false)` if
    /// something is there (created after it was checked for). Atomic
    /// (`RENAME_NOREPLACE`, or a hard link where the file system has no
    /// such rename: NFS).
    pub fn rename_noreplace(&self, from: &str, dest: &Dir, to: &str) -> Result<bool, SafeFsError> {
        let err = |e: std::io::Error| SafeFsError::Io { path: dest.join(to), cause: e };
        let (cf, ct) = match (std::ffi::CString::new(from.as_bytes()), std::ffi::CString::new(to.as_bytes()))
        {
            (Ok(f), Ok(t)) => (f, t),
            _ => return Err(err(std::io::Error::other("a name with a NUL byte"))),
        };
        let (fd, dfd) = (self.handle.as_raw_fd(), dest.handle.as_raw_fd());
        // SAFETY: both names are valid C strings, both fds open directories.
        let r = unsafe { libc::renameat2(fd, cf.as_ptr(), dfd, ct.as_ptr(), libc::RENAME_NOREPLACE) };
        if r == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EEXIST) => Ok(false),
            Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                // SAFETY: as above; linkat with no flags never follows `from`.
                match unsafe { libc::linkat(fd, cf.as_ptr(), dfd, ct.as_ptr(), 0) } {
                    0 => {
                        self.remove_quietly(from);
                        Ok(true)
                    }
                    _ => match std::io::Error::last_os_error() {
                        e if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
                        e => Err(err(e)),
                    },
                }
            }
            _ => Err(err(e)),
        }
    }

    /// Remove an entry (a link is removed, not what it points to).
    pub fn remove(&self, name: &str) -> Result<(), SafeFsError> {
        std::fs::remove_file(self.fd_path(name)).map_err(io_err(&self.join(name)))
    }

    /// [`Dir::remove`] for clean-up paths: a name already gone is fine, and
    /// a failure only leaves a stray file behind.
    pub fn remove_quietly(&self, name: &str) {
        // A clean-up after another error: nothing to add to that error.
        let _ = std::fs::remove_file(self.fd_path(name));
    }

    /// The names in the directory.
    pub fn names(&self) -> Result<Vec<String>, SafeFsError> {
        let rd = std::fs::read_dir(self.fd_path("")).map_err(io_err(&self.path))?;
        let mut names = Vec::new();
        for e in rd {
            let e = e.map_err(io_err(&self.path))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    /// Remove every entry but `keep` (subdirectories with their content;
    /// links are removed, never followed).
    pub fn clear_except(&self, keep: &str) -> Result<(), SafeFsError> {
        for name in self.names()? {
            if name == keep {
                continue;
            }
            let p = self.fd_path(&name);
            let is_dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
            let r = if is_dir { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            r.map_err(io_err(&self.join(&name)))?;
        }
        Ok(())
    }

    /// fsync the directory (its entries: a rename is durable only then).
    pub fn sync(&self) -> Result<(), SafeFsError> {
        self.handle.sync_all().map_err(io_err(&self.path))
    }

    /// The directory's own metadata (through the handle).
    pub fn metadata(&self) -> Result<std::fs::Metadata, SafeFsError> {
        self.handle.metadata().map_err(io_err(&self.path))
    }
}

/// Bytes available to this user in the file system of `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct; `c` is a valid C string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut s) == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
    }
}

/// `/proc/PID/fd/N` of an open file: the path under which another program
/// (ffmpeg) opens exactly this file.
pub fn file_fd_path(f: &File) -> PathBuf {
    PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd()))
}

fn classify_open(path: &Path, e: std::io::Error) -> SafeFsError {
    // O_NOFOLLOW on a symlink: ELOOP (ENOTDIR with O_DIRECTORY on some).
    match e.raw_os_error() {
        Some(libc::ELOOP) => SafeFsError::Symlink { path: path.to_path_buf() },
        Some(libc::ENOTDIR) => match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => SafeFsError::Symlink { path: path.to_path_buf() },
            _ => SafeFsError::NotDir { path: path.to_path_buf() },
        },
        _ => SafeFsError::Io { path: path.to_path_buf(), cause: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planted(t: &Path) -> (PathBuf, PathBuf) {
        let victim = t.join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("keep"), b"precious").unwrap();
        (victim.clone(), victim.join("keep"))
    }

    #[test]
    fn a_planted_directory_link_is_refused_and_its_target_untouched() {
        let t = tempfile::tempdir().unwrap();
        let (victim, keep) = planted(t.path());
        std::os::unix::fs::symlink(&victim, t.path().join("job")).unwrap();
        let base = Dir::open(t.path()).unwrap();
        let e = base.own_dir("job", 0o2775).unwrap_err();
        assert!(matches!(e, SafeFsError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        use std::os::unix::fs::PermissionsExt;
        assert_ne!(std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777, 0o2775);
        assert_eq!(std::fs::read(&keep).unwrap(), b"precious");
    }

    #[test]
    fn planted_file_links_are_never_written_through() {
        let t = tempfile::tempdir().unwrap();
        let (_, keep) = planted(t.path());
        let base = Dir::open(t.path()).unwrap();
        let dir = base.own_dir("job", 0o755).unwrap();
        for name in ["lock", "job.json", "new"] {
            std::os::unix::fs::symlink(&keep, dir.join(name)).unwrap();
        }
        assert!(matches!(dir.open_own_file("lock").unwrap_err(), SafeFsError::Symlink { .. }));
        assert!(dir.create_new("new").is_err());
        assert!(matches!(dir.read("job.json").unwrap_err(), SafeFsError::Symlink { .. }));
        std::os::unix::fs::symlink(&keep, dir.join("log")).unwrap();
        assert!(matches!(dir.open_append("log").unwrap_err(), SafeFsError::Symlink { .. }));
        // An atomic write replaces the link itself.
        dir.write_atomic("job.json", b"{}").unwrap();
        assert!(!std::fs::symlink_metadata(dir.join("job.json")).unwrap().file_type().is_symlink());
        assert_eq!(dir.read("job.json").unwrap(), b"{}");
        dir.clear_except("lock").unwrap();
        assert_eq!(dir.names().unwrap(), ["lock"]);
        writeln!(dir.open_append("log").unwrap(), "one").unwrap();
        writeln!(dir.open_append("log").unwrap(), "two").unwrap();
        assert_eq!(dir.read("log").unwrap(), b"one\ntwo\n");
        assert_eq!(std::fs::read(&keep).unwrap(), b"precious");
    }

    #[test]
    fn a_handle_outlives_its_name() {
        let t = tempfile::tempdir().unwrap();
        let (victim, keep) = planted(t.path());
        let base = Dir::open(t.path()).unwrap();
        let dir = base.own_dir("job", 0o755).unwrap();
        // Someone renames the directory away and puts a link in its place.
        std::fs::rename(t.path().join("job"), t.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&victim, t.path().join("job")).unwrap();
        let (mut f, tmp) = dir.create_temp("out").unwrap();
        f.write_all(b"data").unwrap();
        dir.rename(&tmp, &dir, "out").unwrap();
        assert_eq!(std::fs::read(t.path().join("moved/out")).unwrap(), b"data");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
        assert_eq!(std::fs::read(&keep).unwrap(), b"precious");
        // Another program writes into the file through its fd path.
        let (f, tmp) = dir.create_temp("ff").unwrap();
        std::fs::write(file_fd_path(&f), b"ffmpeg").unwrap();
        assert_eq!(std::fs::read(t.path().join("moved").join(tmp)).unwrap(), b"ffmpeg");
    }

    #[test]
    fn a_no_replace_rename_leaves_what_appeared_meanwhile() {
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::open(t.path()).unwrap();
        let (mut f, tmp) = dir.create_temp("out").unwrap();
        f.write_all(b"ours").unwrap();
        std::fs::write(t.path().join("out.mp4"), b"someone else's").unwrap();
        assert!(!dir.rename_noreplace(&tmp, &dir, "out.mp4").unwrap());
        assert_eq!(std::fs::read(t.path().join("out.mp4")).unwrap(), b"someone else's");
        std::fs::remove_file(t.path().join("out.mp4")).unwrap();
        assert!(dir.rename_noreplace(&tmp, &dir, "out.mp4").unwrap());
        assert_eq!(std::fs::read(t.path().join("out.mp4")).unwrap(), b"ours");
        assert!(!t.path().join(&tmp).exists());
        // A FIFO under a record's name: refused at once, no hang.
        let fifo = std::ffi::CString::new(t.path().join("job.json").to_str().unwrap()).unwrap();
        // SAFETY: a valid C string path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert!(dir.read("job.json").unwrap_err().to_string().contains("not a regular file"));
    }

    #[test]
    fn someone_elses_directory_is_refused() {
        // Only root can make a directory of another owner.
        if my_uid() != 0 {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let other = t.path().join("job");
        std::fs::create_dir(&other).unwrap();
        std::os::unix::fs::chown(&other, Some(12345), None).unwrap();
        let base = Dir::open(t.path()).unwrap();
        let e = base.own_dir("job", 0o755).unwrap_err();
        assert!(matches!(e, SafeFsError::Owner { owner: 12345, .. }), "{e}");
    }
}
