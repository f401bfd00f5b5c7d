//! Man pages: clap_mangen's NAME, SYNOPSIS, DESCRIPTION, OPTIONS and
//! SUBCOMMANDS from the command-line definition, then EXIT STATUS,
//! ENVIRONMENT, FILES and EXAMPLES written here, per page.

use std::io::Write;
use std::path::Path;

use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;

/// A `.TP` paragraph: a term in bold, then its text.
type Entry = (&'static str, &'static str);

/// What a page adds to clap_mangen's sections.
struct Extra {
    exit: &'static [Entry],
    env: &'static [Entry],
    files: &'static [Entry],
    examples: &'static [Entry],
}

const EXIT_TRANSCODE: &[Entry] = &[
    ("0", "Every output was written or skipped (it exists); with --watch, stopped by SIGTERM or Ctrl-C; with --dry-run, the plan was printed and every file would run or be skipped."),
    ("1", "A job failed or was interrupted (its job directory is kept: the same command resumes it); in a batch, any file failed; no node of the inventory could be used."),
    ("2", "Usage error: bad arguments, options dffmpeg refuses or ffmpeg rejects, an unreadable input or inventory, an output that exists without -y (one input alone); with --dry-run, a file would be refused."),
];

const EXIT_SETUP: &[Entry] = &[
    ("0", "Every task on every node succeeded (changed or not); with --check, nothing was changed."),
    ("1", "A task failed or a node was unreachable (the recap names them), or setup was interrupted."),
    ("2", "Usage error: bad arguments, an unreadable or invalid inventory or playbook directory, --limit or --only naming what does not exist."),
];

const EXIT_FACTS: &[Entry] = &[
    ("0", "Every node was reached and its facts read."),
    ("1", "A node was unreachable or its facts unreadable (the others are still shown)."),
    ("2", "Usage error: bad arguments, an unreadable or invalid inventory."),
];

const EXIT_STATUS: &[Entry] = &[
    ("0", "The status was printed (also when nothing runs)."),
    ("1", "There is no state directory to read ($XDG_STATE_HOME and $HOME unset)."),
    ("2", "Usage error: bad arguments, an unreadable or invalid inventory."),
];

const EXIT_COMPLETIONS: &[Entry] =
    &[("0", "The script was written."), ("1", "It could not be written."), ("2", "Usage error.")];

const EXIT_ALL: &[Entry] = &[
    ("0", "Success (also: the watch service stopped by SIGTERM)."),
    ("1", "The work failed: a job, a task, an unreachable node, or an interrupt (what was done is kept: run the command again)."),
    ("2", "Usage error: bad arguments, input, options or inventory; nothing was started."),
];

const ENV_INVENTORY: Entry =
    ("DFFMPEG_INVENTORY", "The inventory transcode uses when -I is not given (else the embedded local cluster: this machine's cores).");
const ENV_KNOWN_HOSTS: Entry =
    ("DFFMPEG_KNOWN_HOSTS", "dffmpeg's known_hosts file (default $XDG_STATE_HOME/dffmpeg/known_hosts).");
const ENV_STATE: Entry = (
    "XDG_STATE_HOME",
    "dffmpeg's state directory is $XDG_STATE_HOME/dffmpeg (default ~/.local/state/dffmpeg).",
);
const ENV_HOME: Entry =
    ("HOME", "Where ~ in inventory paths and dffmpeg's SSH key (~/.ssh/dffmpeg_ed25519) are.");
const ENV_PATH: Entry = ("PATH", "Where ffmpeg, ffprobe and ssh are found.");

const FILE_KEY: Entry = (
    "~/.ssh/dffmpeg_ed25519",
    "dffmpeg's own SSH key (and .pub), created by setup and installed on the nodes by setup --only ssh-keys --ask-pass; your own keys are never used or installed.",
);
const FILE_KNOWN_HOSTS: Entry = (
    "~/.local/state/dffmpeg/known_hosts",
    "The nodes' host keys dffmpeg trusts (first use, then checked), unless $DFFMPEG_KNOWN_HOSTS.",
);
const FILE_SPEEDS: Entry = (
    "~/.local/state/dffmpeg/speeds.json",
    "Each node's measured encoding speed per encoder settings: the fastest nodes get the first chunks, and --dry-run estimates from it.",
);
const FILE_JOB: Entry = (
    ".OUTPUT.dffmpeg-job/",
    "The job directory, next to the output (SHARED_DIR/work/NAME with shared storage): every verified chunk and, in logs/, the encoder's stderr of each failed attempt (named in its failure message). Removed when the output is written, unless --keep.",
);
const FILE_PRIVATE: Entry = (
    "~/.local/state/dffmpeg/jobs/NAME/",
    "The job's private directory, which only the controller can write: the plan and options (job.json), each verified chunk's seal (chunks.json), the reference codec parameters, the side streams and the merge list. Removed with the job directory.",
);
const FILE_STATUS: Entry = (
    "~/.local/state/dffmpeg/status/PID.json",
    "What each running transcode is doing, kept current by it (written whole, at most every 2 s and on every file event) and removed when it exits: what dffmpeg status and the status page read.",
);
const FILE_FAILED: Entry = (
    "~/.local/state/dffmpeg/failed.json",
    "The files transcodes gave up on (the last 200), with the reason and the log of the last failed attempt; each stays until the file is transcoded.",
);
const FILE_EXAMPLE: Entry = (
    "/usr/share/doc/dffmpeg/examples/inventory.example.yaml",
    "An example inventory, with a walkthrough (Debian package; inventory.example.yaml in the source).",
);
const FILE_UNIT: Entry = (
    "/etc/systemd/system/dffmpeg-watch.service",
    "The watch service setup installs on the controller when the inventory sets cluster.watch (systemctl status dffmpeg-watch, journalctl -u dffmpeg-watch).",
);

const EXAMPLES_TRANSCODE: &[Entry] = &[
    (
        "dffmpeg transcode in.mp4 -c:v libx264 -crf 23 -c:a aac",
        "On this machine's cores; writes in.dffmpeg.mp4 next to the input.",
    ),
    (
        "dffmpeg transcode -I cluster.yaml -o out.mkv movie.mkv -c:v libx264 -preset medium",
        "On the cluster of an inventory.",
    ),
    (
        "dffmpeg transcode -I cluster.yaml -O /srv/dffmpeg/output \"Season 1/\" -c:v libx264 -crf 23",
        "Every video of a folder, into an output folder.",
    ),
    (
        "dffmpeg transcode -I cluster.yaml --watch -O /srv/dffmpeg/output /srv/dffmpeg/upload -c:v libx264",
        "Transcode every new video of a folder until stopped.",
    ),
    (
        "dffmpeg transcode -I cluster.yaml --dry-run -O /srv/dffmpeg/output \"Season 1/\" -c:v libx264",
        "The plan: each file's chunks, what each node starts with, an estimate; nothing is written.",
    ),
    (
        "dffmpeg transcode -v --log-file job.log movie.mkv -c:v libx264",
        "Every chunk on the screen, every line with its time in job.log.",
    ),
];

const EXAMPLES_SETUP: &[Entry] = &[
    (
        "dffmpeg setup cluster.yaml --ask-pass",
        "First bring-up: asks the SSH password once and installs dffmpeg's key.",
    ),
    ("dffmpeg setup cluster.yaml --check --diff", "Show what would change, change nothing."),
    ("dffmpeg setup cluster.yaml --limit pi4 --only packages", "One node, one step."),
];

const EXAMPLES_FACTS: &[Entry] = &[
    (
        "dffmpeg facts cluster.yaml --encoder libx264",
        "Each node's arch, OS, cores, ffmpeg, and whether it has libx264.",
    ),
    ("dffmpeg facts cluster.yaml --json", "One JSON object per node."),
];

const EXAMPLES_STATUS: &[Entry] = &[
    ("dffmpeg status", "What every transcode of this user does now, and the files that failed."),
    ("dffmpeg status -I cluster.yaml", "Only the transcodes on this inventory (the watch service, say)."),
    ("dffmpeg status --json", "All of it as one JSON object (what the status page serves as /status.json)."),
];

const EXAMPLES_COMPLETIONS: &[Entry] = &[(
    "dffmpeg completions bash > ~/.local/share/bash-completion/completions/dffmpeg",
    "Install the bash completions for this user (the Debian package installs them for bash, zsh and fish).",
)];

const EXAMPLES_ALL: &[Entry] = &[
    ("dffmpeg transcode in.mp4 -c:v libx264 -crf 23 -c:a aac", "Transcode on this machine's cores."),
    ("dffmpeg setup cluster.yaml --ask-pass", "Bring the machines of an inventory up."),
    ("dffmpeg facts cluster.yaml --encoder libx264", "Check every node."),
    ("dffmpeg status", "What the transcodes of this machine are doing."),
    ("dffmpeg transcode -I cluster.yaml movie.mkv -c:v libx264 -preset medium", "Transcode on the cluster."),
];

/// The extra sections of the page of `name` (`dffmpeg`, `dffmpeg-transcode` ...).
fn extra(name: &str) -> Extra {
    const ALL_ENV: &[Entry] = &[ENV_INVENTORY, ENV_KNOWN_HOSTS, ENV_STATE, ENV_HOME, ENV_PATH];
    const SSH_ENV: &[Entry] = &[ENV_KNOWN_HOSTS, ENV_STATE, ENV_HOME];
    const ALL_FILES: &[Entry] = &[
        FILE_KEY,
        FILE_KNOWN_HOSTS,
        FILE_SPEEDS,
        FILE_JOB,
        FILE_PRIVATE,
        FILE_STATUS,
        FILE_FAILED,
        FILE_EXAMPLE,
        FILE_UNIT,
    ];
    match name {
        "dffmpeg-transcode" => Extra {
            exit: EXIT_TRANSCODE,
            env: ALL_ENV,
            files: &[
                FILE_KEY,
                FILE_KNOWN_HOSTS,
                FILE_SPEEDS,
                FILE_JOB,
                FILE_PRIVATE,
                FILE_STATUS,
                FILE_FAILED,
            ],
            examples: EXAMPLES_TRANSCODE,
        },
        "dffmpeg-setup" => Extra {
            exit: EXIT_SETUP,
            env: SSH_ENV,
            files: &[FILE_KEY, FILE_KNOWN_HOSTS, FILE_EXAMPLE, FILE_UNIT],
            examples: EXAMPLES_SETUP,
        },
        "dffmpeg-facts" => Extra {
            exit: EXIT_FACTS,
            env: SSH_ENV,
            files: &[FILE_KEY, FILE_KNOWN_HOSTS],
            examples: EXAMPLES_FACTS,
        },
        "dffmpeg-status" => Extra {
            exit: EXIT_STATUS,
            env: &[ENV_INVENTORY, ENV_STATE, ENV_HOME],
            files: &[FILE_STATUS, FILE_FAILED, FILE_UNIT],
            examples: EXAMPLES_STATUS,
        },
        "dffmpeg-completions" => {
            Extra { exit: EXIT_COMPLETIONS, env: &[], files: &[], examples: EXAMPLES_COMPLETIONS }
        }
        _ => Extra { exit: EXIT_ALL, env: ALL_ENV, files: ALL_FILES, examples: EXAMPLES_ALL },
    }
}

/// A page for `cmd` and one per visible subcommand, into `dir`.
pub fn write_all(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub, dir)?;
    }
    write_page(&cmd, dir)
}

fn write_page(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
    let mut page = Vec::new();
    render(cmd, &mut page)?;
    std::fs::write(dir.join(Man::new(cmd.clone()).get_filename()), page)
}

/// clap_mangen's sections (its EXTRA, the after-help, gives way to
/// EXAMPLES and FILES), then ours, then VERSION (the top page's).
pub fn render(cmd: &clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let man = Man::new(cmd.clone()).source(format!("dffmpeg {}", env!("CARGO_PKG_VERSION")));
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    let name = man.get_filename();
    let name = name.trim_end_matches(".1");
    if name == "dffmpeg" {
        man.render_subcommands_section(w)?;
    }
    let extra = extra(name);
    let mut roff = Roff::new();
    for (title, entries) in [
        ("EXIT STATUS", extra.exit),
        ("ENVIRONMENT", extra.env),
        ("FILES", extra.files),
        ("EXAMPLES", extra.examples),
    ] {
        section(&mut roff, title, entries);
    }
    roff.to_writer(w)?;
    match cmd.get_version() {
        Some(_) => man.render_version_section(w),
        None => Ok(()),
    }
}

fn section(roff: &mut Roff, title: &str, entries: &[Entry]) {
    if entries.is_empty() {
        return;
    }
    roff.control("SH", [title]);
    for (term, text) in entries {
        roff.control("TP", []);
        roff.text([bold(*term)]);
        roff.text([roman(*text)]);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn page(name: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        write_all(crate::cli::Cli::command(), dir.path()).unwrap();
        std::fs::read_to_string(dir.path().join(format!("{name}.1"))).unwrap()
    }

    #[test]
    fn every_page_has_the_extra_sections() {
        let dir = tempfile::tempdir().unwrap();
        write_all(crate::cli::Cli::command(), dir.path()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "dffmpeg-completions.1",
                "dffmpeg-facts.1",
                "dffmpeg-setup.1",
                "dffmpeg-status.1",
                "dffmpeg-transcode.1",
                "dffmpeg.1"
            ]
        );
        for name in names {
            let text = std::fs::read_to_string(dir.path().join(&name)).unwrap();
            for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH \"EXIT STATUS\"", ".SH EXAMPLES"]
            {
                assert!(text.contains(section), "{name}: {section}");
            }
        }
    }

    #[test]
    fn transcode_names_its_environment_and_files() {
        let text = page("dffmpeg-transcode");
        for needle in
            ["DFFMPEG_INVENTORY", "DFFMPEG_KNOWN_HOSTS", "XDG_STATE_HOME", "dffmpeg_ed25519", "speeds.json"]
        {
            assert!(text.contains(needle), "{needle}");
        }
        assert!(text.contains("known_hosts") && text.contains("dffmpeg\\-job"), "{text}");
        let root = page("dffmpeg");
        assert!(root.contains(".SH SUBCOMMANDS") && !root.contains("manpages"), "{root}");
    }
}
