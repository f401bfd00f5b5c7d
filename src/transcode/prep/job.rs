//! The job directory: the plan, the verified chunks, the side streams. It
//! makes every step restartable.
//!
//! Two directories make one job. The *work* directory holds the chunks —
//! where nodes write them with `storage: nfs` (`SHARED/work/NAME`), else
//! next to the output — and nothing the controller later acts on is read
//! from it unchecked. The *private* directory (`STATE/jobs/NAME`, 0700,
//! outside anything a node can reach) holds what the controller trusts:
//! the record (`job.json`: key, plan, encoder options), the reference
//! codec parameters, each verified chunk's seal (`chunks.json`: size,
//! inode, hash), the concat list, the side streams and the plain run. A
//! chunk counts as done only when its seal matches the file: a resumed
//! chunk that was cut short, emptied or replaced is encoded again.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::safefs::Dir;
use crate::transcode::ffmpeg::EncodeSpec;
use crate::transcode::plan::Plan;
use crate::transcode::verify::CodecParams;

/// What identifies the work: the same input file (unchanged), the same
/// options and the same plan settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobKey {
    pub input: PathBuf,
    pub input_size: u64,
    pub input_mtime_ns: i128,
    pub ffmpeg_args: Vec<String>,
    /// `--chunk`; None: the default plan, whatever the cluster's size, so a
    /// re-run with a node fewer still resumes.
    pub chunk_seconds: Option<f64>,
    pub output: PathBuf,
}

impl JobKey {
    pub fn new(
        input: &Path,
        output: &Path,
        ffmpeg_args: &[String],
        chunk_seconds: Option<f64>,
    ) -> Result<JobKey> {
        let meta = fs::metadata(input).with_context(|| format!("{}", input.display()))?;
        Ok(JobKey {
            input: input.to_path_buf(),
            input_size: meta.len(),
            input_mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ffmpeg_args: ffmpeg_args.to_vec(),
            chunk_seconds,
            output: output.to_path_buf(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub key: JobKey,
    pub plan: Plan,
    pub encode: EncodeSpec,
    /// Output muxer name (`mp4`, `matroska`, ...).
    pub format: String,
    /// The video encoder the options select (`libx264`), as the controller's
    /// ffmpeg named it; nodes without it are left out.
    #[serde(default)]
    pub encoder: Option<String>,
}

/// What the controller saw of a verified chunk: the file it verified is
/// the file it merges (same inode and size), and a resumed chunk is the
/// one verified (same size and content hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seal {
    pub size: u64,
    pub ino: u64,
    /// FNV-1a 64 of the content, hex: catches damage (a chunk cut short,
    /// emptied, swapped), not forgery — a node that can write chunks can
    /// make its chunks wrong anyway (see the README's security section).
    pub hash: String,
    /// Where the chunk's first frame is in its file, seconds, as verified:
    /// the merge places it there (None: a seal of an older dffmpeg; the
    /// planned start then).
    #[serde(default)]
    pub start: Option<f64>,
}

impl Seal {
    /// The seal of an open file (read from its start to its end).
    pub fn of(file: &File) -> std::io::Result<Seal> {
        let meta = file.metadata()?;
        let mut h = Fnv::default();
        let mut r = file;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.write(&buf[..n]);
        }
        Ok(Seal { size: meta.len(), ino: meta.ino(), hash: format!("{:016x}", h.0), start: None })
    }
}

/// FNV-1a 64, streamed.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes.iter().fold(self.0, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    }
}

pub struct JobDir {
    /// The work directory's path, as the nodes see it with shared storage.
    pub dir: PathBuf,
    handle: Dir,
    /// The controller's own files of the job (see the module doc).
    private: Dir,
    /// Verified chunks' seals, by chunk index (`chunks.json`).
    seals: Mutex<BTreeMap<usize, Seal>>,
    /// This run's id: attempts' file names carry it, so that an orphan of
    /// an earlier run still writing cannot share a name with an attempt.
    run: String,
    /// Held (flock) while this dffmpeg works on the job; closed by [`JobDir::remove`].
    lock: Mutex<Option<File>>,
}

/// Where a job directory goes: `name` in `base` (a directory the user
/// chose: the output's folder, or the shared directory), optionally inside
/// its subdirectory `within` (`work`), which must not be a symlink.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub base: PathBuf,
    pub within: Option<String>,
    pub name: String,
    /// The job directory's mode (2775 where nodes write chunks as their own users).
    pub mode: u32,
    /// Where the private directory goes (`STATE/jobs`), and its name there.
    pub private_base: PathBuf,
    pub private_name: String,
}

impl Location {
    pub fn path(&self) -> PathBuf {
        let mut p = self.base.clone();
        if let Some(w) = &self.within {
            p.push(w);
        }
        p.join(&self.name)
    }
}

/// How an existing job directory was found.
#[derive(Debug, PartialEq)]
pub enum Found {
    New,
    Resumed(Box<JobRecord>),
    /// Earlier job for other input or options: replaced.
    Replaced,
}

const LOCK: &str = "lock";
const RECORD: &str = "job.json";
const REFERENCE: &str = "reference.json";
const SEALS: &str = "chunks.json";

impl JobDir {
    /// Open (create) the job directory and take its lock. With `fresh`, any
    /// earlier content is removed. Nothing on the way is followed if it is
    /// a symlink, and the directory must be this user's (see
    /// [`crate::safefs`]).
    pub fn open(at: &Location, key: &JobKey, fresh: bool, must_resume: bool) -> Result<(JobDir, Found)> {
        let base = Dir::open(&at.base)?;
        let parent = match &at.within {
            Some(w) => base.ensure_dir(w)?,
            None => base,
        };
        let handle = parent.own_dir(&at.name, at.mode)?;
        let lock = handle.open_own_file(LOCK)?;
        if lock.try_lock().is_err() {
            bail!("another dffmpeg is working on this output (job directory {})", at.path().display());
        }
        crate::state::create_private(&at.private_base)
            .with_context(|| format!("cannot create {}", at.private_base.display()))?;
        let private = Dir::open(&at.private_base)?.own_dir(&at.private_name, 0o700)?;
        let job = JobDir {
            dir: at.path(),
            handle,
            private,
            seals: Mutex::new(BTreeMap::new()),
            run: run_id(),
            lock: Mutex::new(Some(lock)),
        };
        let record = match fresh {
            true => None,
            false => job.record()?,
        };
        let found = match record {
            Some(r) if !fresh && r.key == *key => {
                job.remove_attempts()?;
                job.check_seals();
                Found::Resumed(Box::new(r))
            }
            Some(_) if must_resume => bail!(
                "the job in {} was for another input or other options; use --fresh to start over",
                job.dir.display()
            ),
            Some(_) => {
                job.clear()?;
                Found::Replaced
            }
            None if must_resume => bail!("nothing to resume: no job in {}", job.dir.display()),
            None => {
                job.clear()?;
                Found::New
            }
        };
        Ok((job, found))
    }

    /// A resumed job's verified chunks: each one whose file no longer
    /// matches its seal (cut short, emptied, replaced, a link) is removed
    /// and will be encoded again; so is a chunk file without a seal.
    fn check_seals(&self) {
        let mut kept = BTreeMap::new();
        for (index, seal) in read_seals(&self.private) {
            let name = Self::chunk_name(index);
            let now = self.handle.open_regular(&name).ok().and_then(|f| Seal::of(&f).ok());
            match now {
                // The seal as verified (its first frame's time included),
                // with the inode the file has now.
                Some(s) if s.size == seal.size && s.hash == seal.hash => {
                    kept.insert(index, Seal { ino: s.ino, ..seal });
                }
                _ => self.handle.remove_quietly(&name),
            }
        }
        for name in self.handle.names().unwrap_or_default() {
            let index =
                name.strip_prefix("chunk_").and_then(|n| n.strip_suffix(".nut")).and_then(|n| n.parse().ok());
            if index.is_some_and(|i: usize| !kept.contains_key(&i)) {
                self.handle.remove_quietly(&name);
            }
        }
        *self.seals.lock().unwrap_or_else(|e| e.into_inner()) = kept;
    }

    /// The job's record, if there is one; a damaged one (cut short,
    /// edited) is an error, not a panic later.
    fn record(&self) -> Result<Option<JobRecord>> {
        read_record(&self.private)
    }

    /// Remove everything but the lock (both directories).
    fn clear(&self) -> Result<()> {
        self.seals.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.private.clear_except("")?;
        Ok(self.handle.clear_except(LOCK)?)
    }

    /// Files of earlier runs' attempts (never verified: they do not count).
    fn remove_attempts(&self) -> Result<()> {
        for name in self.handle.names()? {
            if name.ends_with(".part.nut") || name.starts_with("src_") {
                self.handle.remove_quietly(&name);
            }
        }
        Ok(())
    }

    pub fn save(&self, record: &JobRecord) -> Result<()> {
        Ok(self.private.write_atomic(RECORD, &serde_json::to_vec_pretty(record)?)?)
    }

    pub fn chunk_name(index: usize) -> String {
        format!("chunk_{index:05}.nut")
    }

    /// A verified chunk's path, as the nodes see it.
    pub fn chunk(&self, index: usize) -> PathBuf {
        self.dir.join(Self::chunk_name(index))
    }

    /// The names of one attempt's files.
    pub fn attempt_files(&self, index: usize, attempt: u64) -> AttemptFiles {
        AttemptFiles {
            part: format!("chunk_{index:05}.{}-{attempt}.part.nut", self.run),
            source_part: format!("src_{index:05}.{}-{attempt}.nut", self.run),
        }
    }

    /// A file of the job's, by name, as the nodes see it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// An attempt's part, opened for verification: a regular file (never a
    /// link, never a FIFO), whatever a node put under its name.
    pub fn open_part(&self, name: &str) -> Result<File> {
        Ok(self.handle.open_regular(name)?)
    }

    /// A new file of the work directory for this process or its ffmpeg to
    /// write (never an existing name, never through a link).
    pub fn create(&self, name: &str) -> Result<File> {
        Ok(self.handle.create_new(name)?)
    }

    /// Make an attempt's verified part the chunk, sealed. `seal` is what
    /// was verified: the name must still hold that very file after the
    /// rename (a node could have swapped it meanwhile).
    pub fn keep_chunk(&self, part: &str, index: usize, seal: Seal) -> Result<()> {
        let name = Self::chunk_name(index);
        self.handle.rename(part, &self.handle, &name)?;
        let there = fs::symlink_metadata(self.handle.fd_path(&name))?;
        if !there.is_file() || there.ino() != seal.ino || there.len() != seal.size {
            self.handle.remove_quietly(&name);
            bail!(
                "chunk {index} was replaced after it was verified (by a node writing to the job directory?)"
            );
        }
        let mut seals = self.seals.lock().unwrap_or_else(|e| e.into_inner());
        seals.insert(index, seal);
        let written = self.save_seals(&seals);
        if written.is_err() {
            seals.remove(&index);
        }
        written
    }

    /// `chunks.json`, whole or not at all.
    fn save_seals(&self, seals: &BTreeMap<usize, Seal>) -> Result<()> {
        Ok(self.private.write_atomic(SEALS, &serde_json::to_vec(seals)?)?)
    }

    /// Keep a failed attempt's log in `logs/` (see `chunk_log.rs`); its path.
    pub fn keep_log(
        &self,
        h: &crate::transcode::chunk_log::Header,
        stderr: &crate::transcode::chunk_log::Tail,
    ) -> Result<PathBuf> {
        Ok(crate::transcode::chunk_log::keep(&self.handle, h, stderr)?)
    }

    /// Remove a file of the work directory if it is there (an attempt's leftovers).
    pub fn discard(&self, name: &str) {
        self.handle.remove_quietly(name);
    }

    /// Whether chunk `index` is verified (sealed: on a resume, only chunks
    /// whose file still matches).
    pub fn is_done(&self, index: usize) -> bool {
        self.seals.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&index)
    }

    /// The verified chunks, opened for the merge, each with where its
    /// first frame is in its file as verified ([`Seal::start`]): each must
    /// still be the file that was verified (regular, same inode and size).
    /// The files stay open while ffmpeg reads them by their `/proc` paths,
    /// so no name is followed. A chunk that changed loses its seal (the
    /// next run encodes it again) and fails the merge.
    pub fn open_chunks(&self, indexes: impl Iterator<Item = usize>) -> Result<Vec<(File, Option<f64>)>> {
        let mut files = Vec::new();
        for index in indexes {
            let seal = self.seals.lock().unwrap_or_else(|e| e.into_inner()).get(&index).cloned();
            let name = Self::chunk_name(index);
            let file = seal.as_ref().and_then(|_| self.handle.open_regular(&name).ok());
            let meta = file.as_ref().and_then(|f| f.metadata().ok());
            match (file, meta, seal) {
                (Some(f), Some(m), Some(s)) if m.ino() == s.ino && m.len() == s.size => {
                    files.push((f, s.start))
                }
                _ => {
                    self.forget(index);
                    bail!(
                        "chunk {index} ({}) changed after it was verified; run the same command again to encode it anew",
                        self.handle.join(&name).display()
                    );
                }
            }
        }
        Ok(files)
    }

    /// Drop a chunk's seal (and file): it is encoded again next time.
    fn forget(&self, index: usize) {
        let mut seals = self.seals.lock().unwrap_or_else(|e| e.into_inner());
        seals.remove(&index);
        // Best effort: a seal left behind is checked again on resume.
        let _ = self.save_seals(&seals);
        self.handle.remove_quietly(&Self::chunk_name(index));
    }

    pub fn side_name(ext: &str) -> String {
        format!("side.{ext}")
    }

    /// Whether the private directory holds `name`.
    pub fn has(&self, name: &str) -> bool {
        self.private.is_file(name)
    }

    /// A file of the private directory, as this machine's programs must
    /// open it: inside this very directory, whatever its name has become.
    pub fn private_path(&self, name: &str) -> PathBuf {
        self.private.fd_path(name)
    }

    /// Write a file of the controller's whole or not at all (private).
    pub fn write(&self, name: &str, data: &[u8]) -> Result<()> {
        Ok(self.private.write_atomic(name, data)?)
    }

    /// A new temporary file of the private directory named after `prefix`
    /// (for ffmpeg to write into through [`crate::safefs::file_fd_path`]),
    /// and its name.
    pub fn create_temp(&self, prefix: &str) -> Result<(File, String)> {
        Ok(self.private.create_temp(prefix)?)
    }

    /// Remove a file of the private directory, if there.
    pub fn discard_private(&self, name: &str) {
        self.private.remove_quietly(name);
    }

    /// Rename a file of the private directory.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        Ok(self.private.rename(from, &self.private, to)?)
    }

    /// The job's reference codec parameters. One written by a dffmpeg that
    /// recorded no level (and `progressive` for an unknown field order) is
    /// not used: the next verified chunk sets it anew.
    pub fn reference(&self) -> Option<CodecParams> {
        let r: CodecParams = serde_json::from_slice(&self.private.read(REFERENCE).ok()?).ok()?;
        (!r.level.is_empty()).then_some(r)
    }

    pub fn save_reference(&self, params: &CodecParams) -> Result<()> {
        self.write(REFERENCE, &serde_json::to_vec_pretty(params)?)
    }

    pub const CONCAT_LIST: &'static str = "concat.txt";

    /// Remove the whole directory (after a successful merge, or a job that
    /// cannot run). Everything but the lock goes while it is held; then the
    /// lock is closed, and only then removed with the directory: on an NFS
    /// client an unlinked file that is still open is only renamed
    /// (`.nfsXXXX`, "silly rename") until it is closed, so removing the
    /// directory with the lock open failed there ("Directory not empty")
    /// when the controller is not the storage node.
    pub fn remove(&self) -> Result<()> {
        let what = || format!("cannot remove {}", self.dir.display());
        self.clear().with_context(what)?;
        // The private directory, by its name in STATE/jobs (this user's only).
        let private = self.private.path().to_path_buf();
        if fs::symlink_metadata(&private).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir(&private).with_context(|| format!("cannot remove {}", private.display()))?;
        }
        drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()).take());
        self.handle.remove_quietly(LOCK);
        // The directory itself, by its name: a link put there meanwhile is
        // removed, never followed (remove_dir refuses non-directories).
        match fs::symlink_metadata(&self.dir) {
            Ok(m) if m.is_dir() => fs::remove_dir(&self.dir).with_context(what),
            _ => Ok(()),
        }
    }
}

/// A job's record in its private directory, if there is one; a damaged one
/// (cut short, edited) is an error, not a panic later.
fn read_record(private: &Dir) -> Result<Option<JobRecord>> {
    let bytes = match private.read(RECORD) {
        Ok(b) => b,
        Err(crate::safefs::SafeFsError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    let damaged = |why: String| {
        anyhow::anyhow!(
            "the job file {} is damaged ({why}); use --fresh to start over",
            private.join(RECORD).display()
        )
    };
    let r: JobRecord = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    r.plan.validate().map_err(|e| damaged(e.to_string()))?;
    Ok(Some(r))
}

/// The seals kept in a private directory (none when missing or damaged:
/// their chunks are then encoded again).
fn read_seals(private: &Dir) -> BTreeMap<usize, Seal> {
    private.read(SEALS).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// A job as it stands, read without creating, locking or changing
/// anything (`--dry-run`): its record and the chunks that are sealed and
/// still there (a run also checks their content). None: no job.
pub fn peek(at: &Location) -> Result<Option<(JobRecord, Vec<bool>)>> {
    let Some(private) = Dir::open(&at.private_base).ok().and_then(|b| b.open_dir(&at.private_name).ok())
    else {
        return Ok(None);
    };
    let Some(record) = read_record(&private)? else { return Ok(None) };
    let seals = read_seals(&private);
    let work = Dir::open(&at.base)
        .ok()
        .and_then(|base| match &at.within {
            Some(w) => base.open_dir(w).ok(),
            None => Some(base),
        })
        .and_then(|parent| parent.open_dir(&at.name).ok());
    let there = |i: usize| work.as_ref().is_some_and(|w| w.is_file(&JobDir::chunk_name(i)));
    let done = (0..record.plan.chunks.len()).map(|i| seals.contains_key(&i) && there(i)).collect();
    Ok(Some((record, done)))
}

/// The names of one attempt's files in the job directory.
#[derive(Debug, Clone)]
pub struct AttemptFiles {
    /// The encoded chunk before verification.
    pub part: String,
    /// The chunk's source packets, for shared-storage nodes.
    pub source_part: String,
}

/// A run id: unique per process and start time.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{:x}", fnv1a(format!("{}-{nanos}", std::process::id()).as_bytes()) & 0xffff_ffff)
}

/// 64-bit FNV-1a: a fixed hash (unlike `DefaultHasher`, the same in every
/// build of dffmpeg), for names that must be found again by a later run.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write(bytes);
    h.0
}

/// Where the job of `output` keeps its files: `SHARED/work/NAME` with
/// shared storage (nodes write their chunks there as their own users:
/// group-writable, setgid so files keep the shared group), else
/// `.OUTPUT.dffmpeg-job` next to the output; and its private directory,
/// `STATE/jobs/NAME` (see the module doc).
pub fn location(output: &Path, shared_dir: Option<&Path>) -> Result<Location> {
    let private_base = crate::state::dir()
        .ok_or_else(|| {
            anyhow::anyhow!("cannot keep the job's private files: neither XDG_STATE_HOME nor HOME is set")
        })?
        .join("jobs");
    let private_name = job_name(output);
    Ok(match shared_dir {
        Some(shared) => Location {
            base: shared.to_path_buf(),
            within: Some("work".into()),
            name: job_name(output),
            mode: 0o2775,
            private_base,
            private_name,
        },
        None => Location {
            base: output.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")),
            within: None,
            name: format!(
                ".{}.dffmpeg-job",
                output.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
            ),
            mode: 0o755,
            private_base,
            private_name,
        },
    })
}

/// A stable name for the job of an output (shared-storage job directories).
pub fn job_name(output: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let stem: String = output
        .file_stem()
        .map(|s| s.to_string_lossy().chars().filter(|c| c.is_ascii_alphanumeric()).take(24).collect())
        .unwrap_or_default();
    format!("{stem}-{:016x}", fnv1a(output.as_os_str().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &Path, args: &[&str]) -> JobKey {
        let input = dir.join("in.mp4");
        fs::write(&input, b"x").unwrap();
        JobKey::new(
            &input,
            &dir.join("out.mp4"),
            &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            Some(3.0),
        )
        .unwrap()
    }

    fn loc(dir: &Path) -> Location {
        let private_base = dir.join("state");
        fs::create_dir_all(&private_base).unwrap();
        Location {
            base: dir.to_path_buf(),
            within: None,
            name: "job".into(),
            mode: 0o755,
            private_base,
            private_name: "job-private".into(),
        }
    }

    /// Keep a chunk as a node would leave it: a part, verified and sealed.
    fn keep(job: &JobDir, index: usize, content: &[u8]) {
        let files = job.attempt_files(index, 1);
        fs::write(job.path(&files.part), content).unwrap();
        let seal = Seal::of(&job.open_part(&files.part).unwrap()).unwrap();
        job.keep_chunk(&files.part, index, seal).unwrap();
    }

    fn record(k: JobKey) -> JobRecord {
        use crate::transcode::probe::{Packet, Rational};
        let packets: Vec<Packet> = (0..50).map(|i| Packet { pts: i, key: i % 25 == 0 }).collect();
        JobRecord {
            key: k,
            plan: crate::transcode::plan::plan(
                &packets,
                Rational { num: 1, den: 25 },
                crate::transcode::plan::Sizing::Fixed(1.0),
            ),
            encode: EncodeSpec {
                codec_args: vec![],
                rotate_filter: None,
                user_filter: None,
                vfr_time_base: None,
                in_band_headers: false,
                plain: None,
            },
            format: "mp4".into(),
            encoder: None,
        }
    }

    #[test]
    fn resume_only_the_same_job() {
        let t = tempfile::tempdir().unwrap();
        let jd = loc(t.path());
        let k = key(t.path(), &["-c:v", "mpeg4"]);
        {
            let (job, found) = JobDir::open(&jd, &k, false, false).unwrap();
            assert_eq!(found, Found::New);
            job.save(&record(k.clone())).unwrap();
            keep(&job, 0, b"done");
            // A second dffmpeg on the same job is refused while the first runs.
            assert!(JobDir::open(&jd, &k, false, false).is_err());
        }
        let (job, found) = JobDir::open(&jd, &k, false, false).unwrap();
        assert!(matches!(found, Found::Resumed(_)));
        assert!(job.is_done(0));
        drop(job);
        // A damaged record is named, and --fresh replaces it.
        let path = t.path().join("state/job-private/job.json");
        let good = fs::read_to_string(&path).unwrap();
        for bad in [&good[..good.len() / 2], &good.replace("\"den\": 25", "\"den\": 0")] {
            fs::write(&path, bad).unwrap();
            let e = JobDir::open(&jd, &k, false, false).err().unwrap().to_string();
            assert!(e.contains("damaged") && e.contains("--fresh"), "{e}");
        }
        let (job, found) = JobDir::open(&jd, &k, true, false).unwrap();
        assert_eq!(found, Found::New);
        job.save(&record(k.clone())).unwrap();
        drop(job);
        let other = key(t.path(), &["-c:v", "libx264"]);
        assert!(JobDir::open(&jd, &other, false, true).is_err());
        let (job, found) = JobDir::open(&jd, &other, false, false).unwrap();
        assert_eq!(found, Found::Replaced);
        assert!(!job.is_done(0));
    }

    #[test]
    fn a_resumed_chunk_counts_only_if_it_is_the_one_verified() {
        // Killed after 3 chunks; one is cut short, one emptied, one
        // replaced by a link to a private file, one left alone: only the
        // last counts as done, and the others are gone.
        let t = tempfile::tempdir().unwrap();
        let at = loc(t.path());
        let k = key(t.path(), &["-c:v", "mpeg4"]);
        let secret = t.path().join("secret.nut");
        fs::write(&secret, b"private").unwrap();
        {
            let (job, _) = JobDir::open(&at, &k, false, false).unwrap();
            job.save(&record(k.clone())).unwrap();
            for i in 0..4 {
                keep(&job, i, format!("chunk {i} holds its frames").as_bytes());
            }
            // A chunk file nobody verified does not count either.
            fs::write(job.chunk(5), b"planted").unwrap();
            let f = fs::OpenOptions::new().write(true).open(job.chunk(0)).unwrap();
            f.set_len(3).unwrap();
            fs::write(job.chunk(1), b"").unwrap();
            fs::remove_file(job.chunk(2)).unwrap();
            std::os::unix::fs::symlink(&secret, job.chunk(2)).unwrap();
        }
        let (job, found) = JobDir::open(&at, &k, false, false).unwrap();
        assert!(matches!(found, Found::Resumed(_)));
        let done: Vec<usize> = (0..6).filter(|&i| job.is_done(i)).collect();
        assert_eq!(done, [3]);
        for i in [0, 1, 2, 5] {
            assert!(fs::symlink_metadata(job.chunk(i)).is_err(), "chunk {i} is left");
        }
        assert_eq!(fs::read(&secret).unwrap(), b"private");
        assert_eq!(job.open_chunks([3].into_iter()).unwrap().len(), 1);
        // Swapped after it was verified: the merge refuses it, and the
        // next run encodes it again.
        fs::remove_file(job.chunk(3)).unwrap();
        std::os::unix::fs::symlink(&secret, job.chunk(3)).unwrap();
        let e = job.open_chunks([3].into_iter()).unwrap_err().to_string();
        assert!(e.contains("changed after it was verified"), "{e}");
        assert!(!job.is_done(3));
    }

    #[test]
    fn a_resumed_chunk_keeps_its_verified_start() {
        // The merge places a chunk by the first frame's time verified;
        // a resume must not lose it.
        let t = tempfile::tempdir().unwrap();
        let at = loc(t.path());
        let k = key(t.path(), &["-c:v", "mpeg2video"]);
        {
            let (job, _) = JobDir::open(&at, &k, false, false).unwrap();
            job.save(&record(k.clone())).unwrap();
            let files = job.attempt_files(0, 1);
            fs::write(job.path(&files.part), b"a chunk").unwrap();
            let mut seal = Seal::of(&job.open_part(&files.part).unwrap()).unwrap();
            seal.start = Some(10.04);
            job.keep_chunk(&files.part, 0, seal).unwrap();
        }
        let (job, found) = JobDir::open(&at, &k, false, false).unwrap();
        assert!(matches!(found, Found::Resumed(_)));
        assert_eq!(job.open_chunks([0].into_iter()).unwrap()[0].1, Some(10.04));
    }

    #[test]
    fn a_fifo_record_is_an_error_not_a_hang() {
        let t = tempfile::tempdir().unwrap();
        let at = loc(t.path());
        let k = key(t.path(), &["-c:v", "mpeg4"]);
        drop(JobDir::open(&at, &k, false, false).unwrap());
        let record = t.path().join("state/job-private/job.json");
        let c = std::ffi::CString::new(record.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = JobDir::open(&at, &k, false, false).err().unwrap().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    /// Descriptors of this process open on files under `dir`.
    fn open_under(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .filter(|p| p.starts_with(dir) && p != dir)
            .collect()
    }

    #[test]
    fn remove_closes_the_lock_before_removing_the_directory() {
        // On an NFS client, a file unlinked while open stays as .nfsXXXX and
        // the directory cannot be removed: nothing may be open in it then.
        let t = tempfile::tempdir().unwrap();
        let at = loc(t.path());
        let jd = at.path();
        let k = key(t.path(), &["-c:v", "mpeg4"]);
        let (job, _) = JobDir::open(&at, &k, false, false).unwrap();
        let job = std::sync::Arc::new(job);
        let other = job.clone(); // as while other tasks still hold the job
        job.save(&record(k.clone())).unwrap();
        keep(&job, 0, b"done");
        assert_eq!(open_under(&jd).len(), 1, "the lock is held while the job runs");
        other.remove().unwrap();
        assert!(!jd.exists());
        assert_eq!(open_under(&jd), Vec::<PathBuf>::new(), "a file still open in the removed job directory");
        // Another dffmpeg can take the job at once.
        let (_again, found) = JobDir::open(&at, &k, false, false).unwrap();
        assert_eq!(found, Found::New);
    }

    #[test]
    fn an_older_reference_is_set_anew() {
        let t = tempfile::tempdir().unwrap();
        let k = key(t.path(), &["-c:v", "mpeg4"]);
        let (job, _) = JobDir::open(&loc(t.path()), &k, false, false).unwrap();
        // Written before levels and colour tags were compared, with
        // "progressive" for a field order ffprobe did not name.
        let old = r#"{"codec":"h264","profile":"High","pix_fmt":"yuv420p","width":320,"height":240,"sample_aspect_ratio":"1:1","field_order":"progressive"}"#;
        fs::write(t.path().join("state/job-private/reference.json"), old).unwrap();
        assert_eq!(job.reference(), None);
        let mut params: CodecParams = serde_json::from_str(old).unwrap();
        params.level = "20".into();
        job.save_reference(&params).unwrap();
        assert_eq!(job.reference(), Some(params));
        // An older job record (no plain run stored) still loads.
        let mut rec = serde_json::to_value(record(k.clone())).unwrap();
        rec["encode"].as_object_mut().unwrap().remove("plain");
        fs::write(t.path().join("state/job-private/job.json"), rec.to_string()).unwrap();
        assert_eq!(job.record().unwrap().map(|r| r.encode.plain), Some(None));
    }
}
