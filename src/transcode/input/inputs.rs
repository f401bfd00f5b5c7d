//! Inputs: the files a `transcode` command names — files, or directories
//! walked for video files — and where each one's output goes.
//!
//! The rule for a directory: every regular file below it (recursively,
//! following no directory symlink) whose name does not start with `.`,
//! — a symbolic link to a file counts only when the file it names lies
//! inside the same directory tree (an upload folder must not be a way to
//! make the cluster read, and publish, a file from anywhere else), —
//! that nothing has written for a while (`--settle`, 5 s by default: it is
//! not still being copied), and in which ffprobe finds a video stream that
//! is not a still picture (cover art, or an image file: image demuxers are
//! not video). A file ffprobe cannot read at all is an input too when its
//! extension is a video container's (`.mp4`, `.mkv` ...: a damaged video,
//! which then fails, named), and is ignored otherwise. Its output
//! is `OUTPUT_DIR/SUBDIRS/STEM.EXT`, mirroring the subfolders; a file named
//! on the command line is used as is (a bad one fails, with its reason).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A file must be untouched this long to count as complete (default).
pub const SETTLED: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{0} is a directory: name an output directory with -O DIR")]
    DirNeedsOutputDir(PathBuf),
    #[error("-o names one output: with several inputs or a directory, use -O DIR")]
    OneOutput,
    #[error("-o and -O exclude each other")]
    BothOutputs,
    #[error("no input given")]
    Nothing,
    #[error("file names must be UTF-8: {0}")]
    NotUtf8(PathBuf),
}

/// One file of the batch and its output.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSpec {
    pub input: PathBuf,
    /// None: the default (`NAME.dffmpeg.EXT` next to the input), or the
    /// single-file `-o`.
    pub output: Option<PathBuf>,
    /// Found in a directory (as opposed to named on the command line).
    pub found: bool,
    /// The `-O` directory, below which the output's folders are made.
    pub out_root: Option<PathBuf>,
    /// ffprobe's streams answer, when the walk read it ([`examine`]).
    pub probed: Option<Arc<Vec<u8>>>,
}

/// How outputs are named.
#[derive(Debug, Clone, PartialEq)]
pub enum Outputs {
    /// `NAME.dffmpeg.EXT` next to each input.
    NextToInput,
    /// `-o FILE` (one input only).
    File(PathBuf),
    /// `-O DIR`: `DIR/[SUBDIRS/]STEM.EXT`.
    Dir { dir: PathBuf, ext: Option<String> },
}

/// The extension of a muxer's files, for `-f FORMAT` with `-O`.
pub fn extension_for(format: &str) -> Option<&'static str> {
    Some(match format {
        "mp4" => "mp4",
        "matroska" => "mkv",
        "webm" => "webm",
        "mov" => "mov",
        "avi" => "avi",
        "mpegts" => "ts",
        "nut" => "nut",
        "flv" => "flv",
        "mpeg" | "dvd" | "vcd" | "svcd" => "mpg",
        "vob" => "vob",
        "mxf" => "mxf",
        "dv" => "dv",
        "ogg" => "ogv",
        "3gp" => "3gp",
        "ipod" => "m4a",
        _ => return None,
    })
}

/// What a walk of the inputs found.
#[derive(Debug, Default, PartialEq)]
pub struct Expanded {
    pub files: Vec<FileSpec>,
    /// Files still being written (not untouched for the settle time).
    pub unsettled: Vec<PathBuf>,
    /// Symbolic links to files outside their directory tree (skipped).
    pub outside: Vec<PathBuf>,
}

/// The files of `inputs`, in order: files as named, directories walked
/// (sorted by path). `outputs` names where each goes.
pub fn expand(inputs: &[PathBuf], outputs: &Outputs, settle: Duration) -> Result<Expanded, InputError> {
    if inputs.is_empty() {
        return Err(InputError::Nothing);
    }
    let mut ex = Expanded::default();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| InputError::Io { path: input.clone(), cause: e })?;
        match (meta.is_dir(), outputs) {
            (true, Outputs::Dir { dir, ext }) => {
                let w = walk(input, Some(dir), settle)?;
                ex.unsettled.extend(w.unsettled.into_iter().map(|(p, _)| p));
                ex.outside.extend(w.outside);
                ex.files.extend(w.files.into_iter().map(|f| found_below(input, f, dir, ext.as_deref())));
            }
            (true, _) => return Err(InputError::DirNeedsOutputDir(input.clone())),
            (false, Outputs::Dir { dir, ext }) => {
                let name = PathBuf::from(input.file_name().unwrap_or_default());
                ex.files.push(FileSpec {
                    output: Some(output_in(dir, &name, ext.as_deref())),
                    input: input.clone(),
                    found: false,
                    out_root: Some(dir.clone()),
                    probed: None,
                });
            }
            (false, Outputs::File(out)) => ex.files.push(FileSpec {
                input: input.clone(),
                output: Some(out.clone()),
                found: false,
                out_root: None,
                probed: None,
            }),
            (false, Outputs::NextToInput) => ex.files.push(FileSpec {
                input: input.clone(),
                output: None,
                found: false,
                out_root: None,
                probed: None,
            }),
        }
    }
    if matches!(outputs, Outputs::File(_)) && (ex.files.len() != 1 || ex.files[0].found) {
        return Err(InputError::OneOutput);
    }
    Ok(ex)
}

/// The spec of `file`, found below the directory `input`, its output
/// below `dir` (`-O`) with the extension `ext` (else its own).
pub fn found_below(input: &Path, file: PathBuf, dir: &Path, ext: Option<&str>) -> FileSpec {
    let rel = file.strip_prefix(input).unwrap_or(&file).to_path_buf();
    FileSpec {
        output: Some(output_in(dir, &rel, ext)),
        input: file,
        found: true,
        out_root: Some(dir.to_path_buf()),
        probed: None,
    }
}

/// `DIR/REL` with the extension `ext` (else REL's own).
fn output_in(dir: &Path, rel: &Path, ext: Option<&str>) -> PathBuf {
    let mut out = dir.join(rel);
    if let Some(e) = ext {
        out.set_extension(e);
    }
    out
}

/// What a walk of one directory found.
#[derive(Debug, Default)]
pub struct Walk {
    pub files: Vec<PathBuf>,
    /// Files still being written, with the time each last changed.
    pub unsettled: Vec<(PathBuf, SystemTime)>,
    pub outside: Vec<PathBuf>,
    /// Directories below the first that could not be read (left out).
    pub unreadable: Vec<(PathBuf, std::io::Error)>,
}

/// What one name found in a directory of the tree is (the module doc's
/// rule, without the ffprobe part).
#[derive(Debug, PartialEq)]
pub enum Entry {
    /// A directory (not a link to one): walked.
    Dir,
    /// A complete file (untouched for the settle time).
    File,
    /// A file still being written; it last changed then.
    Unsettled(SystemTime),
    /// A symbolic link to a file outside the tree.
    Outside,
    /// Hidden, gone, or no file at all.
    Other,
}

/// Files below `dir` that may be videos (see the module doc; the ffprobe
/// part of the rule is [`examine`]), untouched for `settle`, skipping
/// `skip` (the output directory, when it lies inside).
pub fn walk(dir: &Path, skip: Option<&Path>, settle: Duration) -> Result<Walk, InputError> {
    let root = dir.canonicalize().map_err(|e| InputError::Io { path: dir.to_path_buf(), cause: e })?;
    let mut w = walk_below(dir, &root, skip, settle, &mut |_| {})?;
    // A one-shot run says which folder it cannot read.
    match w.unreadable.is_empty() {
        true => Ok(w),
        false => {
            let (path, cause) = w.unreadable.swap_remove(0);
            Err(InputError::Io { path, cause })
        }
    }
}

/// [`walk`] of `dir`, a directory of the tree whose canonical path is
/// `root` (a link counts when its file lies below `root`), calling
/// `on_dir` with each directory before it is read (`--watch` watches it).
/// A directory below `dir` that cannot be read is left out and named.
pub fn walk_below(
    dir: &Path,
    root: &Path,
    skip: Option<&Path>,
    settle: Duration,
    on_dir: &mut dyn FnMut(&Path),
) -> Result<Walk, InputError> {
    // Canonical now: the output directory may appear after a walk.
    let skip = skip.and_then(|s| s.canonicalize().ok());
    let mut found = BTreeSet::new();
    let mut w = Walk::default();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if skip.as_deref().is_some_and(|s| d.canonicalize().is_ok_and(|c| c == s)) {
            continue;
        }
        on_dir(&d);
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            // Removed since it was listed: nothing to read.
            Err(e) if d != dir && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if d != dir => {
                w.unreadable.push((d, e));
                continue;
            }
            Err(e) => return Err(InputError::Io { path: d, cause: e }),
        };
        for entry in rd {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    w.unreadable.push((d.clone(), e));
                    break;
                }
            };
            let path = entry.path();
            if hidden(&path) {
                continue;
            }
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                todo.push(path);
                continue;
            }
            match file_entry(&path, kind.is_symlink(), root, settle) {
                Entry::File => {
                    found.insert(path);
                }
                Entry::Unsettled(at) => w.unsettled.push((path, at)),
                Entry::Outside => w.outside.push(path),
                Entry::Dir | Entry::Other => {}
            }
        }
    }
    w.files = found.into_iter().collect();
    w.unsettled.sort();
    w.outside.sort();
    Ok(w)
}

/// What `path`, a name in a directory of the tree `root` (canonical), is
/// now (`--watch`: a name the kernel reported).
pub fn entry(path: &Path, root: &Path, settle: Duration) -> Entry {
    if hidden(path) {
        return Entry::Other;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Entry::Dir,
        Ok(m) => file_entry(path, m.file_type().is_symlink(), root, settle),
        Err(_) => Entry::Other,
    }
}

fn hidden(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
}

/// A name that is not a directory: a file (by the rules on links and
/// settling), or nothing.
fn file_entry(path: &Path, is_link: bool, root: &Path, settle: Duration) -> Entry {
    let Ok(meta) = std::fs::metadata(path) else { return Entry::Other };
    if !meta.is_file() {
        Entry::Other
    } else if is_link && !path.canonicalize().is_ok_and(|t| t.starts_with(root)) {
        Entry::Outside
    } else if settled(&meta, settle) {
        Entry::File
    } else {
        Entry::Unsettled(changed(&meta))
    }
}

/// Nothing has written the file for `settle` (its ctime changes with
/// every write, and cannot be set back like its mtime).
pub fn settled(meta: &std::fs::Metadata, settle: Duration) -> bool {
    SystemTime::now().duration_since(changed(meta)).is_ok_and(|age| age >= settle)
}

/// When the file last changed: the later of its ctime and mtime.
pub fn changed(meta: &std::fs::Metadata) -> SystemTime {
    use std::os::unix::fs::MetadataExt;
    let ctime = SystemTime::UNIX_EPOCH + Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec() as u32);
    meta.modified().unwrap_or(ctime).max(ctime)
}

/// Whether a file found in a directory is an input (the rule in the
/// module doc).
#[derive(Debug)]
pub enum Examined {
    /// A video: ffprobe's streams answer, kept for the job's probe.
    Video(Arc<Vec<u8>>),
    /// Unreadable, but named like a video container's file (it fails,
    /// named).
    ByName,
    /// No input.
    Not,
}

/// Read what a file found in a directory holds (see the module doc).
pub async fn examine(path: &Path) -> Examined {
    let probe = crate::transcode::probe::STREAMS;
    let Ok(out) = crate::transcode::probe::ffprobe(&probe, path).await else {
        return match crate::transcode::output::format_for(path, None).is_ok_and(|f| f != "ipod") {
            true => Examined::ByName,
            false => Examined::Not,
        };
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out) else { return Examined::Not };
    let format = v["format"]["format_name"].as_str().unwrap_or("");
    if format.starts_with("image2") || format.ends_with("_pipe") || format == "gif" {
        return Examined::Not;
    }
    let video = v["streams"].as_array().is_some_and(|streams| {
        streams.iter().any(|s| s["codec_type"] == "video" && s["disposition"]["attached_pic"] != 1)
    });
    match video {
        true => Examined::Video(Arc::new(out)),
        false => Examined::Not,
    }
}

/// A found file that is an input, with what its examination read.
pub async fn if_video(mut f: FileSpec) -> Option<FileSpec> {
    match examine(&f.input).await {
        Examined::Video(json) => {
            f.probed = Some(json);
            Some(f)
        }
        Examined::ByName => Some(f),
        Examined::Not => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_mirror_subfolders_and_take_the_formats_extension() {
        let t = tempfile::tempdir().unwrap();
        let season = t.path().join("season");
        std::fs::create_dir_all(season.join("disc 2")).unwrap();
        std::fs::create_dir_all(season.join(".hidden")).unwrap();
        for f in ["e01.mp4", "disc 2/e02.mkv", ".partial.mp4", ".hidden/x.mp4"] {
            std::fs::write(season.join(f), b"x").unwrap();
        }
        // Written just now: not settled for 5 s.
        let w = walk(&season, None, SETTLED).unwrap();
        assert_eq!(w.files, Vec::<PathBuf>::new());
        let unsettled: Vec<&PathBuf> = w.unsettled.iter().map(|(p, _)| p).collect();
        assert_eq!(unsettled, [&season.join("disc 2/e02.mkv"), &season.join("e01.mp4")]);
        let out = season.join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("e00.mp4"), b"x").unwrap();
        let o = Outputs::Dir { dir: out.clone(), ext: None };
        let files = expand(std::slice::from_ref(&season), &o, Duration::ZERO).unwrap().files;
        let pairs: Vec<(PathBuf, PathBuf)> =
            files.iter().map(|f| (f.input.clone(), f.output.clone().unwrap())).collect();
        assert_eq!(
            pairs,
            [
                (season.join("disc 2/e02.mkv"), out.join("disc 2/e02.mkv")),
                (season.join("e01.mp4"), out.join("e01.mp4")),
            ],
            "hidden files and the output directory inside are skipped"
        );
        let o = Outputs::Dir { dir: out.clone(), ext: Some("mp4".into()) };
        assert_eq!(
            expand(&[season.join("disc 2/e02.mkv")], &o, SETTLED).unwrap().files[0].output,
            Some(out.join("e02.mp4"))
        );
        let z = Duration::ZERO;
        assert!(matches!(
            expand(std::slice::from_ref(&season), &Outputs::NextToInput, z),
            Err(InputError::DirNeedsOutputDir(_))
        ));
        let two = [season.join("e01.mp4"), season.join("disc 2/e02.mkv")];
        assert!(matches!(expand(&two, &Outputs::File(out.join("x.mp4")), z), Err(InputError::OneOutput)));
        assert_eq!(extension_for("matroska"), Some("mkv"));
    }

    #[test]
    fn a_reported_name_follows_the_walks_rule() {
        let t = tempfile::tempdir().unwrap();
        let (up, private) = (t.path().join("upload"), t.path().join("private"));
        for d in [up.join("sub"), up.join("out"), private.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        for f in [up.join("sub/a.mp4"), up.join(".b.mp4"), private.join("c.mp4")] {
            std::fs::write(f, b"x").unwrap();
        }
        std::os::unix::fs::symlink(private.join("c.mp4"), up.join("c.mp4")).unwrap();
        let root = up.canonicalize().unwrap();
        let z = Duration::ZERO;
        assert_eq!(entry(&up.join("sub"), &root, z), Entry::Dir);
        assert_eq!(entry(&up.join("sub/a.mp4"), &root, z), Entry::File);
        assert!(matches!(entry(&up.join("sub/a.mp4"), &root, SETTLED), Entry::Unsettled(_)));
        assert_eq!(entry(&up.join(".b.mp4"), &root, z), Entry::Other);
        assert_eq!(entry(&up.join("c.mp4"), &root, z), Entry::Outside);
        assert_eq!(entry(&up.join("gone.mp4"), &root, z), Entry::Other);
        // Each directory is announced before it is read; the output's never.
        let mut dirs = Vec::new();
        let w =
            walk_below(&up, &root, Some(&up.join("out")), z, &mut |d| dirs.push(d.to_path_buf())).unwrap();
        dirs.sort();
        assert_eq!(dirs, [up.clone(), up.join("sub")]);
        assert_eq!(w.files, [up.join("sub/a.mp4")]);
    }

    #[test]
    fn links_count_only_inside_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let (up, private) = (t.path().join("upload"), t.path().join("private"));
        std::fs::create_dir_all(up.join("sub")).unwrap();
        std::fs::create_dir_all(&private).unwrap();
        std::fs::write(private.join("secret.mp4"), b"x").unwrap();
        std::fs::write(up.join("sub/real.mp4"), b"x").unwrap();
        std::os::unix::fs::symlink(private.join("secret.mp4"), up.join("a.mp4")).unwrap();
        std::os::unix::fs::symlink(up.join("sub/real.mp4"), up.join("b.mp4")).unwrap();
        std::os::unix::fs::symlink(&private, up.join("dir")).unwrap();
        let w = walk(&up, None, Duration::ZERO).unwrap();
        assert_eq!(w.files, [up.join("b.mp4"), up.join("sub/real.mp4")]);
        assert_eq!(w.outside, [up.join("a.mp4")]);
    }
}
