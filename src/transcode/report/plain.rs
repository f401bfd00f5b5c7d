//! Plain lines, when stdout is not a terminal: the batch's story and, in
//! one command (not a watch: a service's output is its journal), a
//! progress line at most every five seconds while attempts run.

use std::time::{Duration, Instant};

use super::events::Event;
use super::lines::{Level, Line};
use super::sink::{hms, say, Sink};
use super::tally::Tally;

pub struct Plain {
    /// `-v`: every line.
    verbose: bool,
    /// `--watch`: one line per file event, no progress lines.
    watch: bool,
    last_line: Instant,
}

impl Plain {
    pub fn new(verbose: bool, watch: bool) -> Plain {
        Plain { verbose, watch, last_line: Instant::now() }
    }

    fn shows(&self, level: Level) -> bool {
        match level {
            _ if self.verbose => true,
            Level::File => true,
            Level::Stage | Level::Chunk => !self.watch,
            Level::Detail => false,
        }
    }
}

impl Sink for Plain {
    fn event(&mut self, _t: f64, _ev: &Event, lines: &[Line], _tally: &Tally) {
        for l in lines.iter().filter(|l| self.shows(l.level)) {
            say(&l.text);
        }
    }

    fn tick(&mut self, _t: f64, tally: &Tally) {
        if self.watch || self.last_line.elapsed() < Duration::from_secs(5) || !tally.busy() {
            return;
        }
        self.last_line = Instant::now();
        let (done, fps, eta) = tally.rate();
        let files = if tally.files > 1 {
            format!("{}/{} files, ", tally.files_ended, tally.files)
        } else {
            String::new()
        };
        let eta = eta.map(|e| format!(", ETA {}", hms(e))).unwrap_or_default();
        say(&format!("progress: {files}{done}/{} frames, {fps:.1} fps{eta}", tally.total));
    }
}
