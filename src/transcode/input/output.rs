//! Where the result goes and in which format; refuses what would lose data.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use crate::safefs::{Dir, SafeFsError};

/// Muxer names for common extensions (what ffmpeg would guess).
const FORMATS: &[(&str, &str)] = &[
    ("mp4", "mp4"),
    ("m4v", "mp4"),
    ("m4a", "ipod"),
    ("mov", "mov"),
    ("mkv", "matroska"),
    ("webm", "webm"),
    ("avi", "avi"),
    ("ts", "mpegts"),
    ("m2ts", "mpegts"),
    ("mts", "mpegts"),
    ("nut", "nut"),
    ("flv", "flv"),
    ("mpg", "mpeg"),
    ("mpeg", "mpeg"),
    ("vob", "vob"),
    ("mxf", "mxf"),
    ("dv", "dv"),
    ("ogv", "ogg"),
    ("3gp", "3gp"),
];

pub fn format_for(path: &Path, forced: Option<&str>) -> Result<String> {
    if let Some(f) = forced {
        return Ok(f.to_string());
    }
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    FORMATS.iter().find(|(e, _)| *e == ext).map(|(_, f)| f.to_string()).ok_or_else(|| {
        anyhow!(
            "cannot tell the output format from {:?}; name it .mp4, .mkv, ... or pass -f FORMAT",
            path.display().to_string()
        )
    })
}

/// `NAME.dffmpeg.EXT` next to the input.
pub fn default_output(input: &Path) -> PathBuf {
    let stem = input.file_stem().map(|s| s.to_os_string()).unwrap_or_default();
    let mut name = stem;
    name.push(".dffmpeg");
    if let Some(ext) = input.extension() {
        name.push(".");
        name.push(ext);
    }
    input.with_file_name(name)
}

/// Why an output cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output {0} is not a file name")]
    NotAFile(PathBuf),
    #[error("output directory {path}: {cause}")]
    Dir { path: PathBuf, cause: std::io::Error },
    #[error("output {0} is the input file")]
    IsInput(PathBuf),
    #[error("output {0} is a directory")]
    IsDir(PathBuf),
    #[error("output {0} exists (use -y to overwrite)")]
    Exists(PathBuf),
    #[error("output directory {0} is not writable: {1}")]
    NotWritable(PathBuf, SafeFsError),
    #[error(transparent)]
    Unsafe(#[from] SafeFsError),
}

/// The output's folder, opened: `root` (an `-O` directory, created if
/// missing) and the subfolders below it that mirror the input's, created
/// without following any link; or the output's parent as named.
pub fn open_dir(root: Option<&Path>, output: &Path) -> Result<Dir, OutputError> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(root) = root else {
        let dir = parent.canonicalize().map_err(|e| OutputError::Dir { path: parent.clone(), cause: e })?;
        return Ok(Dir::open(&dir)?);
    };
    std::fs::create_dir_all(root).map_err(|e| OutputError::Dir { path: root.to_path_buf(), cause: e })?;
    let canon = root.canonicalize().map_err(|e| OutputError::Dir { path: root.to_path_buf(), cause: e })?;
    let mut dir = Dir::open(&canon)?;
    let rel = parent.strip_prefix(root).unwrap_or(Path::new(""));
    for part in rel.components() {
        let name = part.as_os_str().to_string_lossy();
        dir = dir.ensure_dir(&name)?;
    }
    Ok(dir)
}

/// Check the output: not the input, not an existing file unless
/// `overwrite`, in a writable directory `dir` (its folder, see
/// [`open_dir`]). Returns its absolute path.
pub fn check_output(input: &Path, output: &Path, dir: &Dir, overwrite: bool) -> Result<PathBuf, OutputError> {
    let name = output.file_name().ok_or_else(|| OutputError::NotAFile(output.to_path_buf()))?;
    let out = dir.path().join(name);
    if let (Ok(a), Ok(b)) = (std::fs::metadata(input), std::fs::metadata(&out)) {
        use std::os::unix::fs::MetadataExt;
        if a.dev() == b.dev() && a.ino() == b.ino() {
            return Err(OutputError::IsInput(output.to_path_buf()));
        }
    }
    if out.is_dir() {
        return Err(OutputError::IsDir(output.to_path_buf()));
    }
    if out.exists() && !overwrite {
        return Err(OutputError::Exists(output.to_path_buf()));
    }
    // A new file, never through a link someone put there.
    let (_, probe) = dir
        .create_temp(".dffmpeg-write-test")
        .map_err(|e| OutputError::NotWritable(dir.path().to_path_buf(), e))?;
    dir.remove(&probe)?;
    Ok(out)
}

/// ffmpeg's default video codec for a muxer (`Default video codec: h264.`).
pub async fn default_video_codec(format: &str) -> Option<String> {
    let out = crate::process::command("ffmpeg")
        .args(["-hide_banner", "-h"])
        .arg(format!("muxer={format}"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    parse_default_video(&String::from_utf8_lossy(&out.stdout))
}

fn parse_default_video(help: &str) -> Option<String> {
    help.lines()
        .find_map(|l| l.trim().strip_prefix("Default video codec:"))
        .map(|c| c.trim().trim_end_matches('.').to_string())
        .filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_output_is_next_to_the_input() {
        assert_eq!(default_output(Path::new("/v/a b.mp4")), PathBuf::from("/v/a b.dffmpeg.mp4"));
        assert_eq!(default_output(Path::new("clip")), PathBuf::from("clip.dffmpeg"));
    }

    #[test]
    fn formats_from_extensions() {
        assert_eq!(format_for(Path::new("x.MKV"), None).unwrap(), "matroska");
        assert_eq!(format_for(Path::new("x.weird"), Some("mp4")).unwrap(), "mp4");
        assert!(format_for(Path::new("x.weird"), None).is_err());
    }

    #[test]
    fn default_codec_from_muxer_help() {
        assert_eq!(parse_default_video("Muxer mp4\n    Default video codec: h264.\n"), Some("h264".into()));
        assert_eq!(parse_default_video("nothing"), None);
    }

    #[test]
    fn refuses_input_existing_and_unwritable() {
        let t = tempfile::tempdir().unwrap();
        let input = t.path().join("in.mp4");
        std::fs::write(&input, b"x").unwrap();
        let check = |out: &Path, overwrite: bool| {
            let dir = open_dir(None, out)?;
            check_output(&input, out, &dir, overwrite)
        };
        assert!(check(&input, true).unwrap_err().to_string().contains("is the input"));
        let out = t.path().join("out.mp4");
        std::fs::write(&out, b"x").unwrap();
        assert!(matches!(check(&out, false), Err(OutputError::Exists(_))));
        assert!(check(&out, true).is_ok());
        assert!(check(Path::new("/nonexistent/dir/o.mp4"), true).is_err());
        // Mirrored subfolders are made below an -O root, never through a link.
        let root = t.path().join("o");
        let dir = open_dir(Some(&root), &root.join("a/b/x.mp4")).unwrap();
        assert_eq!(dir.path(), root.canonicalize().unwrap().join("a/b"));
        std::os::unix::fs::symlink(t.path(), root.join("l")).unwrap();
        assert!(open_dir(Some(&root), &root.join("l/x.mp4")).is_err());
    }
}
