//! Progress bars on a terminal: one for the batch's frames, one per
//! attempt under way; the lines of files and stages above them (chunk
//! lines only with `-v`: the bars show the chunks).

use std::collections::HashMap;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::events::Event;
use super::lines::{Level, Line};
use super::sink::{say, Sink};
use super::tally::Tally;

pub struct Bars {
    /// `-v`: every line, above the bars.
    verbose: bool,
    /// `--watch`: one line per file event.
    watch: bool,
    /// From the batch's start to its summary.
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    /// By attempt.
    attempts: HashMap<u64, ProgressBar>,
}

impl Bars {
    pub fn new(verbose: bool, watch: bool) -> Bars {
        Bars { verbose, watch, multi: None, overall: None, attempts: HashMap::new() }
    }

    fn shows(&self, level: Level) -> bool {
        match level {
            _ if self.verbose => true,
            Level::File => true,
            Level::Stage => !self.watch,
            Level::Chunk | Level::Detail => false,
        }
    }

    /// The lines it shows, above the bars when they are up.
    fn print(&self, lines: &[Line]) {
        for l in lines.iter().filter(|l| self.shows(l.level)) {
            match &self.multi {
                // A terminal that went away: nothing to print to.
                Some(m) => {
                    let _ = m.println(&l.text);
                }
                None => say(&l.text),
            }
        }
    }

    fn start(&mut self) {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} frames  {msg}  ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.overall = Some(bar);
        self.multi = Some(multi);
    }

    fn clear(&mut self) {
        if let Some(m) = self.multi.take() {
            // Clearing a terminal that is gone changes nothing.
            let _ = m.clear();
        }
    }

    /// An attempt's bar: added, moved on, taken away.
    fn attempt(&mut self, ev: &Event, tally: &Tally) {
        match ev {
            Event::ChunkStart { file, chunk, attempt, node, frames, duplicate, .. } => {
                let Some(m) = &self.multi else { return };
                let b = m.add(ProgressBar::new(*frames));
                b.set_style(
                    ProgressStyle::with_template("  {prefix:<14} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b.set_prefix(crate::text::printable(node));
                let file = if tally.files > 1 { format!("{file} ") } else { String::new() };
                let dup = if *duplicate { " (duplicate)" } else { "" };
                b.set_message(crate::text::printable(&format!("{file}chunk {chunk}{dup}: starting")));
                self.attempts.insert(*attempt, b);
            }
            Event::ChunkProgress { attempt, frames } => {
                let (Some(r), Some(b)) = (tally.running.get(attempt), self.attempts.get(attempt)) else {
                    return;
                };
                let fps = *frames as f64 / r.started.elapsed().as_secs_f64().max(1e-3);
                b.set_message(format!("chunk {}: {frames}/{} frames, {fps:.1} fps", r.chunk, r.of));
            }
            Event::ChunkDone { attempt, .. }
            | Event::ChunkFailed { attempt, .. }
            | Event::ChunkCancelled { attempt, .. } => {
                if let (Some(b), Some(m)) = (self.attempts.remove(attempt), &self.multi) {
                    b.finish_and_clear();
                    m.remove(&b);
                }
            }
            _ => {}
        }
    }
}

impl Sink for Bars {
    fn event(&mut self, _t: f64, ev: &Event, lines: &[Line], tally: &Tally) {
        match ev {
            // The batch's first lines above where its bars go.
            Event::BatchStart { .. } => {
                self.print(lines);
                self.start();
            }
            // The summary after the bars are gone.
            Event::BatchDone { .. } => {
                self.clear();
                self.overall = None;
                self.print(lines);
            }
            _ => {
                self.attempt(ev, tally);
                self.print(lines);
            }
        }
    }

    fn tick(&mut self, _t: f64, tally: &Tally) {
        let Some(b) = &self.overall else { return };
        let (done, fps, _) = tally.rate();
        b.set_length(tally.total);
        b.set_position(done);
        let files = if tally.files > 1 {
            format!("{}/{} files  ", tally.files_ended, tally.files)
        } else {
            String::new()
        };
        b.set_message(format!("{files}{fps:.1} fps"));
    }

    fn finish(&mut self) {
        self.clear();
    }
}
