//! Command-line interface.

use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::exit::{failed, Outcome};

#[derive(Parser, Debug)]
#[command(
    name = "dffmpeg",
    version,
    about = "Distributed ffmpeg: set up a small transcoding cluster over SSH and transcode on it",
    after_long_help = "Examples:\n  \
        dffmpeg transcode in.mp4 -c:v libx264 -crf 23 -c:a aac\n  \
        dffmpeg setup cluster.yaml --ask-pass\n  \
        dffmpeg facts cluster.yaml --encoder libx264\n  \
        dffmpeg transcode -I cluster.yaml movie.mkv -c:v libx264 -preset medium\n\n\
        An example inventory: /usr/share/doc/dffmpeg/examples/inventory.example.yaml \
        (Debian package) or inventory.example.yaml in the source."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Split a video into keyframe-aligned chunks, encode them on the
    /// cluster, merge them frame-exactly.
    Transcode(TranscodeArgs),
    /// Bring the cluster of an inventory up: apt sources, packages, SSH keys,
    /// the NFS export and mounts.
    Setup(SetupArgs),
    /// Show each node's facts: reachability, arch, OS, cores, ffmpeg.
    Facts(FactsArgs),
    /// Show what the transcodes running on this machine are doing (the
    /// watch service and one-shot commands alike): files queued, in
    /// progress, done, skipped and failed; nodes with their speed and state.
    Status(StatusArgs),
    /// Print a shell completion script.
    ///
    /// For example `dffmpeg completions bash >
    /// ~/.local/share/bash-completion/completions/dffmpeg`; the Debian
    /// package installs them for bash, zsh and fish.
    Completions(CompletionsArgs),
    /// Write the man pages (dffmpeg.1, dffmpeg-SUBCOMMAND.1) into a
    /// directory; for packaging.
    #[command(hide = true)]
    Manpages(ManpagesArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Refuse hosts whose key is not yet in dffmpeg's known_hosts file.
    #[arg(long)]
    pub strict_host_keys: bool,
}

impl ConnectArgs {
    /// The connection options these flags ask for.
    pub fn options(&self) -> Result<crate::remote::ConnectOptions, crate::remote::SshError> {
        crate::remote::ConnectOptions::new(self.strict_host_keys)
    }
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// More detail: every chunk's start and end (also above the progress
    /// bars and in --watch), stopped duplicates, how inputs are read; for
    /// setup, each node's facts and each change batch.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Append every line reported (with -v's detail), each with a time
    /// stamp, and the final error and exit status to FILE.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

impl LogArgs {
    /// Open the log file, if one is asked for (a bad one is a usage error).
    pub fn open(&self) -> Result<(), crate::exit::Failure> {
        match &self.log_file {
            Some(path) => crate::log::open(path).map_err(crate::exit::usage),
            None => Ok(()),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct TranscodeArgs {
    /// Inventory file (default: $DFFMPEG_INVENTORY, else the embedded local
    /// cluster of this machine's cores).
    #[arg(short = 'I', long = "inventory", value_name = "INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// Output file, for one input (default: NAME.dffmpeg.EXT next to it).
    #[arg(short = 'o', long = "output", value_name = "OUTPUT", conflicts_with = "output_dir")]
    pub output: Option<PathBuf>,
    /// Output directory: each output is DIR/STEM.EXT (the input's
    /// extension unless -f says otherwise), mirroring the subfolders of a
    /// directory input. Existing outputs are skipped unless -y.
    #[arg(short = 'O', long = "output-dir", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Overwrite existing output files.
    #[arg(short = 'y', long = "overwrite")]
    pub overwrite: bool,
    /// Chunk length in seconds (default: guided — each chunk the time left
    /// divided by the slots, 3 s to 120 s, so chunks shrink toward the end).
    #[arg(long, value_name = "SECONDS")]
    pub chunk: Option<f64>,
    /// Resume an interrupted job for this input and output (the default
    /// when a matching job directory exists).
    #[arg(long, conflicts_with = "fresh")]
    pub resume: bool,
    /// Ignore and replace any earlier job directory.
    #[arg(long)]
    pub fresh: bool,
    /// Keep the job's directories after success.
    ///
    /// A failed or interrupted job's are always kept, to resume. The job
    /// directory (next to the output, or SHARED_DIR/work/NAME) holds the
    /// verified video chunks (chunk_NNNNN.nut) and, in logs/, the encoder's
    /// stderr of each failed attempt (chunk_NNNNN.NODE.attempt-N.log); the
    /// private one (~/.local/state/dffmpeg/jobs/NAME) the plan and options
    /// (job.json), the chunks' seals (chunks.json), the audio and subtitle
    /// streams (side.EXT), the chunks' codec parameters (reference.json)
    /// and the merge list (concat.txt).
    #[arg(long)]
    pub keep: bool,
    /// One JSON event per line on stdout instead of progress bars.
    #[arg(long)]
    pub json: bool,
    /// Probe and plan, write nothing: print each input's chunks (index,
    /// start, end, frames), which chunks each node would start with,
    /// whether the nodes read the inputs in place or get them streamed,
    /// and an estimate from the speeds earlier jobs measured. With --json,
    /// the plan as one JSON object.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep watching the input directories: transcode every new video once
    /// it is complete (untouched for --settle seconds), until SIGTERM.
    #[arg(long, requires = "output_dir")]
    pub watch: bool,
    /// Seconds a file in an input directory must be untouched to count as
    /// complete (it may still be being copied).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub settle: f64,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// The inputs (files or directories, up to the first word starting with
    /// `-`), then ffmpeg output options, e.g. `in.mp4 -c:v libx264 -crf 23
    /// -c:a aac` (a `--` before the options also works).
    #[arg(
        value_name = "INPUT... [FFMPEG OUTPUT ARGS]",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub words: Vec<String>,
}

impl TranscodeArgs {
    /// The inputs: the leading words up to the first one that starts with
    /// `-`; the rest are ffmpeg's (a leading `--` dropped by the parser).
    pub fn split_words(&self) -> (Vec<PathBuf>, Vec<String>) {
        let n = self.words.iter().position(|w| w.starts_with('-')).unwrap_or(self.words.len());
        let inputs = self.words[..n].iter().map(PathBuf::from).collect();
        (inputs, self.words[n..].to_vec())
    }
}

#[derive(Args, Debug, Clone)]
pub struct SetupArgs {
    /// Inventory file.
    pub inventory: PathBuf,
    /// Change nothing; report what would change.
    #[arg(long)]
    pub check: bool,
    /// Show a unified diff of each file that changes (or would change).
    #[arg(long)]
    pub diff: bool,
    /// Only these nodes (comma-separated names).
    #[arg(long, value_delimiter = ',', value_name = "NODE,...")]
    pub limit: Vec<String>,
    /// Only these steps: apt-sources, packages, ssh-keys, exports, mounts, watch.
    #[arg(long, value_delimiter = ',', value_name = "STEP,...")]
    pub only: Vec<String>,
    /// Ask the SSH password once, for first bring-up of password-only nodes.
    #[arg(long)]
    pub ask_pass: bool,
    /// With --ask-pass: send the password also to hosts never seen before
    /// without asking (for scripts; their key fingerprints are still shown).
    /// On a terminal dffmpeg asks once instead; without either it does not
    /// send the password to a new host.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Seconds any one remote step may take (connecting, reading a node's
    /// facts and state, each task of a change batch); tasks that install
    /// packages allow themselves more.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,
    /// Nodes handled in parallel.
    #[arg(long, default_value_t = 5)]
    pub forks: usize,
    /// One JSON event per line on stdout.
    #[arg(long)]
    pub json: bool,
    /// Directory overriding the embedded playbooks/ and templates/.
    #[arg(long, value_name = "DIR")]
    pub playbook_dir: Option<PathBuf>,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug, Clone)]
pub struct FactsArgs {
    /// Inventory file.
    pub inventory: PathBuf,
    /// Check whether this encoder exists on each node (e.g. libx264).
    #[arg(long, value_name = "ENCODER")]
    pub encoder: Option<String>,
    /// One JSON object per node.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

impl From<FactsArgs> for crate::facts::command::Request {
    fn from(a: FactsArgs) -> Self {
        let strict_host_keys = a.connect.strict_host_keys;
        crate::facts::command::Request {
            inventory: a.inventory,
            encoder: a.encoder,
            json: a.json,
            strict_host_keys,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Only the transcodes on this inventory (default: $DFFMPEG_INVENTORY
    /// if set, else every transcode of this user).
    #[arg(short = 'I', long = "inventory", value_name = "INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// The whole status as one JSON object (what the status page's
    /// /status.json serves).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug, Clone)]
pub struct ManpagesArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `dffmpeg completions SHELL`: the script, from this very definition, on stdout.
pub fn completions(args: &CompletionsArgs) -> Outcome {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut visible_command(), "dffmpeg", &mut script);
    std::io::stdout()
        .write_all(&script)
        .map_err(|e| failed(anyhow!("cannot write the completion script: {e}")))
}

/// The command line as users see it: clap_complete offers hidden
/// subcommands too (`manpages`, for packaging), so they are left out here.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let shown = |c: &&clap::Command| !c.is_hide_set();
    clap::Command::new("dffmpeg")
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default())
        .args(full.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(full.get_subcommands().filter(shown).cloned())
}

/// `dffmpeg manpages DIR`: a page for dffmpeg and one per visible subcommand.
pub fn manpages(args: &ManpagesArgs) -> Outcome {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).map_err(|e| failed(anyhow!("cannot create {}: {e}", dir.display())))?;
    crate::manpages::write_all(Cli::command(), dir)
        .map_err(|e| failed(anyhow!("cannot write the man pages into {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn completions_offer_no_hidden_subcommand() {
        for shell in clap_complete::Shell::value_variants() {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut visible_command(), "dffmpeg", &mut script);
            let script = String::from_utf8_lossy(&script);
            assert!(!script.contains("manpages"), "{shell}");
            for sub in ["transcode", "setup", "facts", "completions", "inventory", "ask-pass"] {
                assert!(script.contains(sub), "{shell}: {sub}");
            }
        }
    }
}
