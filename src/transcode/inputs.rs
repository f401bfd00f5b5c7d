//! Inputs: the files a `transcode` command names — files, or directories
//! walked for video files — and where each one's output goes.
//!
//! The rule for a directory: every regular file below it (recursively,
//! following no directory symlink) whose name does not start with `.`,
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
        "mpeg" => "mpg",
        "ogg" => "ogv",
        "3gp" => "3gp",
        "ipod" => "m4a",
        _ => return None,
    })
}

/// The files of `inputs`, in order: files as named, directories walked
/// (sorted by path). `outputs` names where each goes.
pub fn expand(inputs: &[PathBuf], outputs: &Outputs, settle: Duration) -> Result<Vec<FileSpec>, InputError> {
    if inputs.is_empty() {
        return Err(InputError::Nothing);
    }
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| InputError::Io { path: input.clone(), cause: e })?;
        match (meta.is_dir(), outputs) {
            (true, Outputs::Dir { dir, ext }) => {
                for f in walk(input, Some(dir), settle)? {
                    let rel = f.strip_prefix(input).unwrap_or(&f).to_path_buf();
                    files.push(FileSpec {
                        output: Some(output_in(dir, &rel, ext.as_deref())),
                        input: f,
                        found: true,
                        out_root: Some(dir.clone()),
                    });
                }
            }
            (true, _) => return Err(InputError::DirNeedsOutputDir(input.clone())),
            (false, Outputs::Dir { dir, ext }) => {
                let name = PathBuf::from(input.file_name().unwrap_or_default());
                files.push(FileSpec {
                    output: Some(output_in(dir, &name, ext.as_deref())),
                    input: input.clone(),
                    found: false,
                    out_root: Some(dir.clone()),
                });
            }
            (false, Outputs::File(out)) => files.push(FileSpec {
                input: input.clone(),
                output: Some(out.clone()),
                found: false,
                out_root: None,
            }),
            (false, Outputs::NextToInput) => {
                files.push(FileSpec { input: input.clone(), output: None, found: false, out_root: None })
            }
        }
    }
    if matches!(outputs, Outputs::File(_)) && (files.len() != 1 || files[0].found) {
        return Err(InputError::OneOutput);
    }
    Ok(files)
}

/// `DIR/REL` with the extension `ext` (else REL's own).
fn output_in(dir: &Path, rel: &Path, ext: Option<&str>) -> PathBuf {
    let mut out = dir.join(rel);
    if let Some(e) = ext {
        out.set_extension(e);
    }
    out
}

/// Files below `dir` that may be videos (see the module doc; the ffprobe
/// part of the rule is [`is_video`]), untouched for `settle`, skipping
/// `skip` (the output directory, when it lies inside).
pub fn walk(dir: &Path, skip: Option<&Path>, settle: Duration) -> Result<Vec<PathBuf>, InputError> {
    let skip = skip.and_then(|s| s.canonicalize().ok());
    let mut found = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if skip.as_deref().is_some_and(|s| d.canonicalize().is_ok_and(|c| c == s)) {
            continue;
        }
        let rd = std::fs::read_dir(&d).map_err(|e| InputError::Io { path: d.clone(), cause: e })?;
        for entry in rd {
            let entry = entry.map_err(|e| InputError::Io { path: d.clone(), cause: e })?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                todo.push(path);
            } else if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && settled(&m, settle)) {
                found.insert(path);
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// Nothing has written the file for `settle` (its ctime changes with
/// every write, and cannot be set back like its mtime).
pub fn settled(meta: &std::fs::Metadata, settle: Duration) -> bool {
    use std::os::unix::fs::MetadataExt;
    let changed =
        SystemTime::UNIX_EPOCH + Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec() as u32);
    let modified = meta.modified().unwrap_or(changed).max(changed);
    SystemTime::now().duration_since(modified).is_ok_and(|age| age >= settle)
}

/// Whether `path` is an input of a directory (see the module doc).
pub async fn is_video(path: &Path) -> bool {
    let args = [
        "-show_entries",
        "format=format_name:stream=codec_type:stream_disposition=attached_pic",
        "-of",
        "json",
    ];
    let Ok(out) = super::probe::ffprobe(&args, path).await else {
        return super::output::format_for(path, None).is_ok_and(|f| f != "ipod");
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out) else { return false };
    let format = v["format"]["format_name"].as_str().unwrap_or("");
    if format.starts_with("image2") || format.ends_with("_pipe") || format == "gif" {
        return false;
    }
    v["streams"].as_array().is_some_and(|streams| {
        streams.iter().any(|s| s["codec_type"] == "video" && s["disposition"]["attached_pic"] != 1)
    })
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
        assert_eq!(walk(&season, None, SETTLED).unwrap(), Vec::<PathBuf>::new());
        let out = season.join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("e00.mp4"), b"x").unwrap();
        let o = Outputs::Dir { dir: out.clone(), ext: None };
        let files = expand(std::slice::from_ref(&season), &o, Duration::ZERO).unwrap();
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
            expand(&[season.join("disc 2/e02.mkv")], &o, SETTLED).unwrap()[0].output,
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
}
