//! The one shape of the reporter's outputs, as ripgrep's printers: each
//! output mode is a [`Sink`] of its own (`plain`, `bars`, `json`), chosen
//! once when the reporter starts; the log file is one more, always there.

use std::io::Write;

use super::events::Event;
use super::lines::Line;
use super::tally::Tally;

pub trait Sink: Send {
    /// One event, `t` seconds after dffmpeg started, with the lines that
    /// tell it and the tally with it counted in.
    fn event(&mut self, t: f64, ev: &Event, lines: &[Line], tally: &Tally);

    /// About once a second while attempts run and frames are known.
    fn tick(&mut self, _t: f64, _tally: &Tally) {}

    /// No more events: take down what is drawn.
    fn finish(&mut self) {}
}

/// `--log-file`: every line, whatever the screen shows.
pub struct LogFile;

impl Sink for LogFile {
    fn event(&mut self, _t: f64, _ev: &Event, lines: &[Line], _tally: &Tally) {
        for l in lines {
            crate::log::line(&l.text);
        }
    }
}

/// A line on stdout; a closed stdout (`| head`) is not an error worth a panic.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// `1:02:03`.
pub fn hms(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
