//! The reporter: receives the batch's events and hands each, with the
//! lines that tell it (`lines`) and the running count (`tally`), to its
//! sinks — the one for the output mode, chosen once here (bars on a
//! terminal, plain lines otherwise, JSON lines with `--json`), and the log
//! file. It owns all display state; the pipeline only sends events.
//!
//! Each line has a [`Level`](super::lines::Level): files, failures and
//! warnings are always shown; chunks only in plain output of one command
//! (a terminal has its bars); `--watch` (a service: its output is the
//! journal) shows one line per file event and no periodic progress; `-v`
//! shows every line. The log file (`--log-file`) gets every line, whatever
//! is shown.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::bars::Bars;
use super::events::{Event, Sender};
use super::json::Json;
use super::lines;
use super::plain::Plain;
use super::sink::{LogFile, Sink};
use super::tally::Tally;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Bars,
    Plain,
    Json,
}

/// How the reporter shows a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    pub mode: Mode,
    /// `-v`: every line, above the bars and in a watch too.
    pub verbose: bool,
    /// `--watch`: one line per file event, no progress lines.
    pub watch: bool,
}

impl Mode {
    pub fn choose(json: bool) -> Mode {
        if json {
            Mode::Json
        } else if std::io::stdout().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        }
    }
}

impl View {
    /// The sink of its output mode.
    fn sink(&self) -> Box<dyn Sink> {
        match self.mode {
            Mode::Bars => Box::new(Bars::new(self.verbose, self.watch)),
            Mode::Plain => Box::new(Plain::new(self.verbose, self.watch)),
            Mode::Json => Box::new(Json),
        }
    }
}

/// Run the reporter until every sender is gone. `started`: when dffmpeg
/// started (the events' `t`).
pub fn spawn(view: View, started: Instant) -> (Sender, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(report(view, started, rx));
    (tx, handle)
}

async fn report(view: View, t0: Instant, mut rx: mpsc::UnboundedReceiver<Event>) {
    let mut tally = Tally::new();
    let mut sinks = [view.sink(), Box::new(LogFile)];
    let mut tick = tokio::time::interval(Duration::from_millis(1000));
    // After a quiet spell, one tick, not a burst of the missed ones.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Ticks only while attempts run: an idle watch never wakes up.
        let busy = tally.busy();
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    tally.apply(&ev);
                    let lines = lines::tell(&tally, &ev);
                    let t = t0.elapsed().as_secs_f64();
                    sinks.iter_mut().for_each(|s| s.event(t, &ev, &lines, &tally));
                }
                None => break,
            },
            _ = tick.tick(), if busy => {
                let t = t0.elapsed().as_secs_f64();
                if tally.total > 0 {
                    sinks.iter_mut().for_each(|s| s.tick(t, &tally));
                }
            }
        }
    }
    sinks.iter_mut().for_each(|s| s.finish());
    // A closed stdout: nothing left to flush to.
    let _ = std::io::stdout().flush();
}
