//! The job directory: the plan, the verified chunks, the side streams. It
//! makes every step restartable: a chunk file exists under its final name
//! only once verified, so the files themselves are the record of progress.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::ffmpeg::EncodeSpec;
use super::plan::Plan;
use super::verify::CodecParams;

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

pub struct JobDir {
    pub dir: PathBuf,
    /// Held (flock) while this dffmpeg works on the job; closed by [`JobDir::remove`].
    lock: Mutex<Option<File>>,
}

/// How an existing job directory was found.
#[derive(Debug, PartialEq)]
pub enum Found {
    New,
    Resumed(Box<JobRecord>),
    /// Earlier job for other input or options: replaced.
    Replaced,
}

impl JobDir {
    /// Open (create) the job directory and take its lock. With `fresh`, any
    /// earlier content is removed.
    pub fn open(dir: &Path, key: &JobKey, fresh: bool, must_resume: bool) -> Result<(JobDir, Found)> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create job directory {}", dir.display()))?;
        let lock =
            File::create(dir.join("lock")).with_context(|| format!("cannot write in {}", dir.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!("another dffmpeg is working on this output (job directory {})", dir.display());
        }
        let job = JobDir { dir: dir.to_path_buf(), lock: Mutex::new(Some(lock)) };
        let record = job.record();
        let found = match record {
            Some(r) if !fresh && r.key == *key => Found::Resumed(Box::new(r)),
            Some(_) if must_resume => bail!(
                "the job in {} was for another input or other options; use --fresh to start over",
                dir.display()
            ),
            Some(_) => {
                job.clear()?;
                Found::Replaced
            }
            None if must_resume => bail!("nothing to resume: no job in {}", dir.display()),
            None => {
                job.clear()?;
                Found::New
            }
        };
        Ok((job, found))
    }

    fn record(&self) -> Option<JobRecord> {
        let text = fs::read(self.dir.join("job.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Remove everything but the lock.
    fn clear(&self) -> Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_name() != "lock" {
                let p = entry.path();
                if p.is_dir() {
                    fs::remove_dir_all(&p)?;
                } else {
                    fs::remove_file(&p)?;
                }
            }
        }
        Ok(())
    }

    pub fn save(&self, record: &JobRecord) -> Result<()> {
        write_atomic(&self.dir.join("job.json"), &serde_json::to_vec_pretty(record)?)
    }

    pub fn chunk(&self, index: usize) -> PathBuf {
        self.dir.join(format!("chunk_{index:05}.nut"))
    }

    /// Where one attempt writes before verification.
    pub fn part(&self, index: usize, attempt: u64) -> PathBuf {
        self.dir.join(format!("chunk_{index:05}.{attempt}.part.nut"))
    }

    /// The chunk's source packets, for shared-storage nodes.
    pub fn source_part(&self, index: usize, attempt: u64) -> PathBuf {
        self.dir.join(format!("src_{index:05}.{attempt}.nut"))
    }

    pub fn is_done(&self, index: usize) -> bool {
        self.chunk(index).is_file()
    }

    pub fn side(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("side.{ext}"))
    }

    /// The job's reference codec parameters. One written by a dffmpeg that
    /// recorded no level (and `progressive` for an unknown field order) is
    /// not used: the next verified chunk sets it anew.
    pub fn reference(&self) -> Option<CodecParams> {
        let r: CodecParams = serde_json::from_slice(&fs::read(self.dir.join("reference.json")).ok()?).ok()?;
        (!r.level.is_empty()).then_some(r)
    }

    pub fn save_reference(&self, params: &CodecParams) -> Result<()> {
        write_atomic(&self.dir.join("reference.json"), &serde_json::to_vec_pretty(params)?)
    }

    pub fn concat_list(&self) -> PathBuf {
        self.dir.join("concat.txt")
    }

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
        drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()).take());
        fs::remove_dir_all(&self.dir).with_context(what)
    }
}

/// Write a file under a temporary name and rename it into place.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
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

    fn record(k: JobKey) -> JobRecord {
        JobRecord {
            key: k,
            plan: Plan {
                time_base: super::super::probe::Rational { num: 1, den: 25 },
                chunks: vec![],
                total_frames: 0,
                frame_seconds: 0.04,
                skipped_leading: 0,
            },
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
        let jd = t.path().join("job");
        let k = key(t.path(), &["-c:v", "mpeg4"]);
        {
            let (job, found) = JobDir::open(&jd, &k, false, false).unwrap();
            assert_eq!(found, Found::New);
            job.save(&record(k.clone())).unwrap();
            fs::write(job.chunk(0), b"done").unwrap();
            // A second dffmpeg on the same job is refused while the first runs.
            assert!(JobDir::open(&jd, &k, false, false).is_err());
        }
        let (job, found) = JobDir::open(&jd, &k, false, false).unwrap();
        assert!(matches!(found, Found::Resumed(_)));
        assert!(job.is_done(0));
        drop(job);
        let other = key(t.path(), &["-c:v", "libx264"]);
        assert!(JobDir::open(&jd, &other, false, true).is_err());
        let (job, found) = JobDir::open(&jd, &other, false, false).unwrap();
        assert_eq!(found, Found::Replaced);
        assert!(!job.is_done(0));
    }

    /// Descriptors of this process open on files under `dir`.
    fn open_under(dir: &Path) -> Vec<PathBuf> {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .filter(|p| p.starts_with(dir))
            .collect()
    }

    #[test]
    fn remove_closes_the_lock_before_removing_the_directory() {
        // On an NFS client, a file unlinked while open stays as .nfsXXXX and
        // the directory cannot be removed: nothing may be open in it then.
        let t = tempfile::tempdir().unwrap();
        let jd = t.path().join("job");
        let k = key(t.path(), &["-c:v", "mpeg4"]);
        let (job, _) = JobDir::open(&jd, &k, false, false).unwrap();
        let job = std::sync::Arc::new(job);
        let other = job.clone(); // as while other tasks still hold the job
        job.save(&record(k.clone())).unwrap();
        fs::write(job.chunk(0), b"done").unwrap();
        assert_eq!(open_under(&jd).len(), 1, "the lock is held while the job runs");
        other.remove().unwrap();
        assert!(!jd.exists());
        assert_eq!(open_under(&jd), Vec::<PathBuf>::new(), "a file still open in the removed job directory");
        // Another dffmpeg can take the job at once.
        let (_again, found) = JobDir::open(&jd, &k, false, false).unwrap();
        assert_eq!(found, Found::New);
    }

    #[test]
    fn an_older_reference_is_set_anew() {
        let t = tempfile::tempdir().unwrap();
        let k = key(t.path(), &["-c:v", "mpeg4"]);
        let (job, _) = JobDir::open(&t.path().join("job"), &k, false, false).unwrap();
        // Written before levels and colour tags were compared, with
        // "progressive" for a field order ffprobe did not name.
        let old = r#"{"codec":"h264","profile":"High","pix_fmt":"yuv420p","width":320,"height":240,"sample_aspect_ratio":"1:1","field_order":"progressive"}"#;
        fs::write(job.dir.join("reference.json"), old).unwrap();
        assert_eq!(job.reference(), None);
        let mut params: CodecParams = serde_json::from_str(old).unwrap();
        params.level = "20".into();
        job.save_reference(&params).unwrap();
        assert_eq!(job.reference(), Some(params));
        // An older job record (no plain run stored) still loads.
        let mut rec = serde_json::to_value(record(k.clone())).unwrap();
        rec["encode"].as_object_mut().unwrap().remove("plain");
        fs::write(job.dir.join("job.json"), rec.to_string()).unwrap();
        assert_eq!(job.record().map(|r| r.encode.plain), Some(None));
    }
}
