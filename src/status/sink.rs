//! The status sink: sits between a transcode and its progress reporter,
//! folds every event into the [`Model`] and passes it on. The status file
//! is written on every event about a file or a node (before the event is
//! passed on, so whoever sees the event finds the file current) and
//! otherwise at most every [`WRITE_EVERY`] when something changed (an idle
//! transcode wakes only every [`REFRESH_EVERY`]); failures
//! go to `failed.json` as they happen. When the transcode ends the file
//! goes.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::model::{Meta, Model};
use super::store::{self, Writer};
use crate::transcode::events::{Event, Sender};

/// Chunk traffic is written at most this often.
pub const WRITE_EVERY: Duration = Duration::from_secs(2);
/// An unchanged status is rewritten this often (its `updated_at` and the
/// history's latest samples; an idle service writes little, which an SD
/// card likes).
const REFRESH_EVERY: Duration = Duration::from_secs(300);

/// Seconds since the Unix epoch (to a tenth: what the status says).
pub fn unix_now() -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    super::model::round1(now)
}

/// Start the sink in front of `down` (the reporter). Events sent to the
/// returned sender reach `down` after the fold; the task ends (removing the
/// status file) once every sender is gone, and then drops `down`.
/// `state`: the state directory (None: the default one).
pub fn spawn(down: Sender, meta: Meta, state: Option<PathBuf>) -> (Sender, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let pid = meta.pid;
    let model = Model::new(meta, unix_now());
    let writer = state.map_or_else(store::state_dir, Ok).and_then(|s| Writer::open(&s, pid));
    let handle = tokio::spawn(run(rx, down, model, writer));
    (tx, handle)
}

struct Sink {
    down: Sender,
    model: Model,
    writer: Option<Writer>,
    dirty: bool,
    written: f64,
    /// The next tick: every [`WRITE_EVERY`] while something is under way,
    /// else every [`REFRESH_EVERY`] (an idle watch service sleeps).
    wake: tokio::time::Instant,
    /// The first error was told; later ones are not repeated.
    told: bool,
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Event>,
    down: Sender,
    model: Model,
    writer: Result<Writer, store::StoreError>,
) {
    let wake = tokio::time::Instant::now() + WRITE_EVERY;
    let mut s = Sink { down, model, writer: None, dirty: true, written: 0.0, wake, told: false };
    match writer {
        Ok(w) => s.writer = Some(w),
        Err(e) => s.tell(format!("`dffmpeg status` cannot see this transcode: {e}")),
    }
    s.save(unix_now());
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => s.event(ev),
                None => break,
            },
            _ = tokio::time::sleep_until(s.wake) => s.tick(),
        }
    }
    s.finish();
}

impl Sink {
    fn event(&mut self, ev: Event) {
        let now = unix_now();
        let file_event = self.model.apply(&ev, now);
        self.dirty = true;
        if file_event {
            self.save(now);
        }
        // The reporter outlives the sink.
        let _ = self.down.send(ev);
        self.wake = self.wake.min(tokio::time::Instant::now() + WRITE_EVERY);
    }

    fn tick(&mut self) {
        let now = unix_now();
        self.dirty |= self.model.tick(now);
        let due = self.dirty && now - self.written >= WRITE_EVERY.as_secs_f64() * 0.9;
        if due || now - self.written >= REFRESH_EVERY.as_secs_f64() {
            self.save(now);
        }
        let next = if self.model.busy() || self.dirty { WRITE_EVERY } else { REFRESH_EVERY };
        self.wake = tokio::time::Instant::now() + next;
    }

    fn save(&mut self, now: f64) {
        let Some(w) = &self.writer else { return };
        let ops = self.model.take_ops();
        let result = w.record(&ops).and_then(|()| w.write(&self.model.view(now)));
        self.dirty = false;
        self.written = now;
        if let Err(e) = result {
            let path = w.path();
            self.tell(format!("cannot keep the status in {}: {e}", path.display()));
        }
    }

    /// A warning, once: to the reporter and into the status.
    fn tell(&mut self, message: String) {
        if std::mem::replace(&mut self.told, true) {
            return;
        }
        let ev = Event::Warning { message };
        self.model.apply(&ev, unix_now());
        // The reporter outlives the sink.
        let _ = self.down.send(ev);
    }

    fn finish(mut self) {
        if let Some(w) = self.writer.take() {
            let ops = self.model.take_ops();
            // Nobody to tell any more: the reporter is ending too.
            let _ = w.record(&ops);
            w.remove();
        }
    }
}
