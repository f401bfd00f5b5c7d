//! Input: what to transcode and where each output goes — the command line's
//! ffmpeg arguments, the files and folders named (and a watched folder), each
//! output's path and format, and what ffprobe says of a source.

pub mod args;
pub mod inputs;
pub mod output;
pub mod probe;
pub mod watch;
