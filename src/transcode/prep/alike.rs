//! Alike inputs: a batch of files whose video streams encode alike (codec,
//! size, pixel format, frame rate, colour tags, field order, rotation) with
//! the same options into the same format needs its preflight once — the
//! plain run's decisions and the reference codec parameters of the first
//! file serve every other (issue 21: on a Pi controller each preflight is
//! two ffmpeg and two ffprobe starts).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::transcode::context::Io;
use crate::transcode::ffmpeg::EncodeSpec;
use crate::transcode::probe::{Probe, Rational};
use crate::transcode::verify::CodecParams;

/// The properties of a video stream an encode depends on, as ffprobe names
/// them (besides codec, size and rotation, which `Stream` holds itself).
const PROPERTIES: [&str; 14] = [
    "profile",
    "pix_fmt",
    "sample_aspect_ratio",
    "display_aspect_ratio",
    "field_order",
    "color_range",
    "color_space",
    "color_transfer",
    "color_primaries",
    "chroma_location",
    "r_frame_rate",
    "avg_frame_rate",
    "bits_per_raw_sample",
    "has_b_frames",
];

/// A preflight's outcome, for the next alike input.
#[derive(Debug, Clone)]
pub struct Preflighted {
    pub spec: EncodeSpec,
    pub encoder: Option<String>,
    /// The reference codec parameters (none with one ffmpeg build).
    pub reference: Option<CodecParams>,
}

/// The batch's preflights by [`key`].
#[derive(Debug, Clone, Default)]
pub struct Preflights(Arc<Mutex<HashMap<String, Preflighted>>>);

impl Preflights {
    pub fn get(&self, key: &str) -> Option<Preflighted> {
        self.0.lock().ok()?.get(key).cloned()
    }

    pub fn put(&self, key: String, p: Preflighted) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(key, p);
        }
    }

    /// Whether an input has been preflighted yet (the first is not kept
    /// waiting for its probe: see `prepare.rs`).
    pub fn is_empty(&self) -> bool {
        self.0.lock().map(|m| m.is_empty()).unwrap_or(true)
    }
}

/// What must be equal for two inputs' preflights to be one: the video
/// stream's properties, its variable frame rate's time base, and where the
/// output goes (its format) and how the chunks reach the nodes.
pub fn key(probe: &Probe, vfr: Option<Rational>, format: &str, io: Io) -> String {
    let v = probe.video_stream();
    let mut key = format!(
        "{}|{}x{}|rot {}|vfr {}|{format}|{io:?}",
        v.codec_name,
        v.width.unwrap_or(0),
        v.height.unwrap_or(0),
        v.rotation(),
        vfr.map(|t| t.to_string()).unwrap_or_default()
    );
    for name in PROPERTIES {
        let value = v.other.get(name).map(|x| x.to_string()).unwrap_or_default();
        key.push_str(&format!("|{name}={value}"));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(stream: &str) -> Probe {
        Probe {
            format_name: "mov,mp4".into(),
            duration: None,
            streams: vec![serde_json::from_str(stream).unwrap()],
            chapters: 0,
            video: 0,
            video_time_base: Rational { num: 1, den: 12800 },
            packets: Vec::new(),
        }
    }

    #[test]
    fn alike_streams_share_a_key_and_others_do_not() {
        let a = r#"{"index":0,"codec_type":"video","codec_name":"h264","width":1280,"height":720,"pix_fmt":"yuv420p","r_frame_rate":"25/1","start_time":"0.0","duration":"5.0","tags":{"title":"a"}}"#;
        let b = r#"{"index":0,"codec_type":"video","codec_name":"h264","width":1280,"height":720,"pix_fmt":"yuv420p","r_frame_rate":"25/1","start_time":"1.0","duration":"12.0","tags":{"title":"b"}}"#;
        let c = r#"{"index":0,"codec_type":"video","codec_name":"h264","width":1280,"height":720,"pix_fmt":"yuv420p","r_frame_rate":"25/1","color_transfer":"smpte2084"}"#;
        let d = r#"{"index":0,"codec_type":"video","codec_name":"h264","width":1280,"height":720,"pix_fmt":"yuv420p10le","r_frame_rate":"25/1"}"#;
        let k = |s: &str| key(&probe(s), None, "matroska", Io::SharedSource);
        assert_eq!(k(a), k(b), "start, duration and tags do not matter");
        assert_ne!(k(a), k(c), "colour tags do");
        assert_ne!(k(a), k(d), "pixel formats do");
        assert_ne!(k(a), key(&probe(a), None, "mp4", Io::SharedSource), "so does the format");
        assert_ne!(k(a), key(&probe(a), Some(Rational { num: 1, den: 1000 }), "matroska", Io::SharedSource));
    }
}
