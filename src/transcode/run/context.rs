//! How a job's chunks travel to its nodes, and what every attempt of a
//! job shares.
//!
//! Pipe: the controller's split (stream copy) feeds the node's ffmpeg over
//! SSH stdin and its stdout comes back as the part file. Shared: the split
//! writes a file in the shared job directory, the node reads and writes
//! files there. Shared source: the source itself is in the shared directory
//! (or every node is this machine), so there is no split: the node reads
//! its chunk from the source.

use std::path::Path;

use crate::transcode::ffmpeg::{self, EncodeSpec};
use crate::transcode::plan::{Chunk, Plan};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Io {
    /// Chunks stream through the node's stdin and stdout.
    Pipe,
    /// Chunks and parts are files in the shared job directory.
    Shared,
    /// Shared storage holding the source too: nodes read it in place.
    SharedSource,
}

impl Io {
    /// How a job's chunks travel: `shared` is the directory every node
    /// sees at the same path (shared storage), `source` the canonical input.
    /// Nodes that are all this machine read the source in place too.
    pub fn choose(shared: Option<&Path>, source: &Path, all_local: bool) -> Io {
        if all_local {
            return Io::SharedSource;
        }
        use std::os::unix::fs::PermissionsExt;
        // Nodes read as their own users: only a world-readable source is
        // surely readable to them (the split's files are made so).
        let world_readable = || std::fs::metadata(source).is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
        match shared {
            None => Io::Pipe,
            Some(dir) => match dir.canonicalize() {
                // Canonical on both sides: the node's path is the same only
                // when no symlink of this machine leads into the directory.
                Ok(canon) if canon == dir && source.starts_with(dir) && world_readable() => Io::SharedSource,
                _ => Io::Shared,
            },
        }
    }

    /// The input of one chunk's encoder.
    pub fn input(self, ctx: &JobContext, chunk: &Chunk, source_part: &Path) -> ffmpeg::Input {
        match self {
            Io::Pipe => ffmpeg::Input::Nut("pipe:0".into()),
            Io::Shared => ffmpeg::Input::Nut(source_part.to_string_lossy().into_owned()),
            Io::SharedSource => ffmpeg::Input::source(&ctx.source, ctx.video_index, &ctx.plan, chunk),
        }
    }
}

/// What every attempt of a job shares.
pub struct JobContext {
    pub source: String,
    pub video_index: usize,
    pub plan: Plan,
    pub spec: EncodeSpec,
    pub io: Io,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_in_place_only_inside_a_canonical_shared_dir() {
        let base = std::env::temp_dir().join(format!("dffmpeg-io-{}", std::process::id()));
        let shared = base.join("shared");
        std::fs::create_dir_all(shared.join("media")).unwrap();
        let shared = shared.canonicalize().unwrap();
        let link = base.join("link");
        let _ = std::os::unix::fs::symlink(&shared, &link);
        let inside = shared.join("media/in.mp4");
        let private = shared.join("media/private.mp4");
        let outside = base.join("in.mp4");
        for f in [&inside, &private, &outside] {
            std::fs::write(f, b"x").unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(Io::choose(None, &inside, false), Io::Pipe);
        // Every node is this machine: it reads the source itself.
        assert_eq!(Io::choose(None, &outside, true), Io::SharedSource);
        assert_eq!(Io::choose(Some(&shared), &inside, false), Io::SharedSource);
        assert_eq!(Io::choose(Some(&shared), &outside, false), Io::Shared);
        // Through a symlink the nodes' path may differ: split as before.
        assert_eq!(Io::choose(Some(&link), &inside, false), Io::Shared);
        // Not readable to every node user: split as before.
        assert_eq!(Io::choose(Some(&shared), &private, false), Io::Shared);
        let _ = std::fs::remove_dir_all(&base);
    }
}
