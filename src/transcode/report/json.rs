//! `--json`: one JSON object per line — every event but an attempt's
//! progress, and a `progress` object about once a second while attempts
//! run — each with `t`, seconds since dffmpeg started, so that a consumer
//! can draw a timeline.

use serde::Serialize;

use super::events::Event;
use super::lines::Line;
use super::sink::{say, Sink};
use super::tally::Tally;

pub struct Json;

impl Sink for Json {
    fn event(&mut self, t: f64, ev: &Event, _lines: &[Line], _tally: &Tally) {
        if !matches!(ev, Event::ChunkProgress { .. }) {
            emit(t, ev);
        }
    }

    fn tick(&mut self, t: f64, tally: &Tally) {
        let (done, fps, eta) = tally.rate();
        let progress = serde_json::json!({
            "event": "progress", "frames_done": done, "frames": tally.total, "fps": round(fps, 100.0),
            "eta_seconds": eta.map(|e| round(e, 100.0)), "files_done": tally.files_ended, "files": tally.files,
        });
        emit(t, &progress);
    }
}

/// One JSON line, with `t`.
fn emit<T: Serialize>(t: f64, v: &T) {
    let Ok(mut value) = serde_json::to_value(v) else { return };
    if let serde_json::Value::Object(m) = &mut value {
        m.insert("t".into(), serde_json::json!(round(t, 1000.0)));
    }
    if let Ok(line) = serde_json::to_string(&value) {
        say(&line);
    }
}

/// `x` to the nearest `1/per`.
fn round(x: f64, per: f64) -> f64 {
    (x * per).round() / per
}
