//! Probe: what the input holds, from ffprobe alone (packet flags, no decoding).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use serde::Deserialize;

/// A rational number as ffprobe prints it (`1/12800`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rational {
    pub num: i64,
    pub den: i64,
}

impl Rational {
    pub fn parse(s: &str) -> Option<Rational> {
        let (n, d) = s.split_once(['/', ':'])?;
        let (num, den) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
        Some(Rational { num, den })
    }

    pub fn seconds(&self, ts: i64) -> f64 {
        ts as f64 * self.num as f64 / self.den as f64
    }
}

impl std::fmt::Display for Rational {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Stream {
    pub index: usize,
    #[serde(default)]
    pub codec_type: String,
    #[serde(default)]
    pub codec_name: String,
    #[serde(default)]
    pub time_base: String,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub disposition: Disposition,
    #[serde(default)]
    pub side_data_list: Vec<SideData>,
    /// Every other property ffprobe shows (pixel format, colour tags ...):
    /// what tells two inputs' video streams alike (see `prep/alike.rs`).
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SideData {
    #[serde(default)]
    pub rotation: Option<f64>,
}

impl Stream {
    pub fn start_seconds(&self) -> Option<f64> {
        self.start_time.as_deref().and_then(|s| s.parse().ok())
    }

    /// Display-matrix rotation in degrees, counter-clockwise, as ffprobe
    /// reports it (0 when none).
    pub fn rotation(&self) -> i64 {
        self.side_data_list.iter().find_map(|d| d.rotation).map(|r| r.round() as i64).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Disposition {
    #[serde(default)]
    pub attached_pic: u8,
}

#[derive(Debug, Clone, Deserialize)]
struct Format {
    #[serde(default)]
    format_name: String,
    #[serde(default)]
    duration: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<Stream>,
    format: Option<Format>,
    #[serde(default)]
    chapters: Vec<serde_json::Value>,
}

/// One video packet, in decode order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub pts: i64,
    pub key: bool,
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub format_name: String,
    pub duration: Option<f64>,
    pub streams: Vec<Stream>,
    pub chapters: usize,
    /// Index (in `streams`) of the video stream that is chunked.
    pub video: usize,
    pub video_time_base: Rational,
    /// The video packets in decode order.
    pub packets: Vec<Packet>,
}

impl Probe {
    pub fn video_stream(&self) -> &Stream {
        &self.streams[self.video]
    }

    /// Seconds from the first video frame to the last one.
    pub fn video_seconds(&self) -> f64 {
        let (lo, hi) =
            self.packets.iter().fold((i64::MAX, i64::MIN), |(lo, hi), p| (lo.min(p.pts), hi.max(p.pts)));
        if lo > hi {
            return 0.0;
        }
        self.video_time_base.seconds(hi - lo)
    }

    /// Where the earliest side stream starts in the source, seconds (0
    /// when none says).
    pub fn side_start(&self) -> f64 {
        self.side_streams()
            .filter_map(|s| s.start_seconds())
            .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.min(s))))
            .unwrap_or(0.0)
    }

    /// Streams other than the chunked video stream (audio, subtitles, ...).
    pub fn side_streams(&self) -> impl Iterator<Item = &Stream> {
        self.streams.iter().filter(move |s| s.index != self.video)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("ffprobe is not installed (apt-get install ffmpeg)")]
    NoFfprobe,
    #[error("cannot run ffprobe: {0}")]
    Io(std::io::Error),
    #[error("not a media file ffmpeg can read: {0}")]
    Unreadable(String),
    #[error("no video stream in it (audio-only or data file)")]
    NoVideo,
    #[error("its video stream has no packets")]
    NoPackets,
    #[error("its video packets have no timestamps; remux it first (e.g. ffmpeg -i IN -c copy OUT.mkv)")]
    NoTimestamps,
    #[error("unexpected ffprobe output: {0}")]
    Parse(String),
}

// By hand, not `#[from]`: the message names the cause, which must not also
// be its `source()` (printed twice in a chain).
impl From<std::io::Error> for ProbeError {
    fn from(e: std::io::Error) -> Self {
        ProbeError::Io(e)
    }
}

/// Run `ffprobe -v error ARGS -i INPUT`; its stdout, or the last line of its
/// error. The one way the pipeline asks ffprobe anything.
pub async fn ffprobe(args: &[&str], input: &Path) -> Result<Vec<u8>, ProbeError> {
    ffprobe_from(args, input, Stdio::null()).await
}

/// [`ffprobe`] with a given stdin (for INPUT `pipe:0`).
pub async fn ffprobe_from(args: &[&str], input: &Path, stdin: Stdio) -> Result<Vec<u8>, ProbeError> {
    let out = crate::process::command("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg("-i")
        .arg(input)
        .stdin(stdin)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ProbeError::NoFfprobe,
            _ => ProbeError::Io(e),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().last().unwrap_or("ffprobe failed").trim();
        // `INPUT: Invalid data ...`: the caller names the input already.
        let line = line.strip_prefix(&format!("{}: ", input.display())).unwrap_or(line);
        return Err(ProbeError::Unreadable(line.to_string()));
    }
    Ok(out.stdout)
}

/// ffprobe's arguments for the container and its streams (JSON).
pub const STREAMS: [&str; 5] = ["-print_format", "json", "-show_format", "-show_streams", "-show_chapters"];

pub async fn probe(input: &Path) -> Result<Probe, ProbeError> {
    probe_with(input, None).await
}

/// [`probe`], with ffprobe's [`STREAMS`] answer already at hand when a
/// folder's walk read it (one ffprobe start less per file).
pub async fn probe_with(input: &Path, streams: Option<Arc<Vec<u8>>>) -> Result<Probe, ProbeError> {
    // The packet scan reads every video stream's packets at once with the
    // stream probe (one ffprobe start-up less on the way to the first chunk);
    // the chunked stream's are kept.
    let json = async {
        match streams {
            Some(json) => Ok(json.to_vec()),
            None => ffprobe(&STREAMS, input).await,
        }
    };
    let (json, csv) = tokio::join!(
        json,
        ffprobe(
            &["-select_streams", "v", "-show_entries", "packet=stream_index,pts,flags", "-of", "csv=p=0"],
            input
        )
    );
    let parsed: ProbeJson = serde_json::from_slice(&json?).map_err(|e| ProbeError::Parse(e.to_string()))?;
    let format = parsed.format.ok_or_else(|| ProbeError::Unreadable("no container format".into()))?;
    let video = pick_video(&parsed.streams).ok_or(ProbeError::NoVideo)?;
    let video_time_base = Rational::parse(&parsed.streams[video].time_base)
        .filter(|r| r.num > 0 && r.den > 0)
        .ok_or_else(|| ProbeError::Parse("video time base".into()))?;
    let packets = parse_packets(&String::from_utf8_lossy(&csv?), parsed.streams[video].index)?;
    Ok(Probe {
        format_name: format.format_name,
        duration: format.duration.and_then(|d| d.parse().ok()),
        streams: parsed.streams,
        chapters: parsed.chapters.len(),
        video,
        video_time_base,
        packets,
    })
}

/// The first real video stream (cover art and thumbnails are not chunked).
fn pick_video(streams: &[Stream]) -> Option<usize> {
    streams.iter().position(|s| s.codec_type == "video" && s.disposition.attached_pic == 0)
}

/// Parse `stream_index,pts,flags` lines, keeping one stream's. Packets
/// without a pts (rare, e.g. raw streams) make the input unusable for exact
/// cutting.
pub fn parse_packets(csv: &str, stream: usize) -> Result<Vec<Packet>, ProbeError> {
    let mut packets = Vec::new();
    for line in csv.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut fields = line.split(',');
        let index = fields.next().unwrap_or("");
        let pts = fields.next().unwrap_or("");
        let flags = fields.next().unwrap_or("");
        match index.parse::<usize>() {
            Ok(i) if i == stream => {}
            Ok(_) => continue,
            Err(_) => return Err(ProbeError::Parse(format!("packet line {line:?}"))),
        }
        let pts: i64 = match pts.parse() {
            Ok(p) => p,
            Err(_) if pts == "N/A" => return Err(ProbeError::NoTimestamps),
            Err(_) => return Err(ProbeError::Parse(format!("packet line {line:?}"))),
        };
        packets.push(Packet { pts, key: flags.starts_with('K') });
    }
    if packets.is_empty() {
        return Err(ProbeError::NoPackets);
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_parse_with_flags() {
        let p = parse_packets("1,0,K_\n\n0,0,K_\n1,2048,__\n1,1024,__,\n", 1).unwrap();
        assert_eq!(
            p,
            vec![
                Packet { pts: 0, key: true },
                Packet { pts: 2048, key: false },
                Packet { pts: 1024, key: false }
            ]
        );
    }

    #[test]
    fn missing_timestamps_are_refused() {
        assert!(matches!(parse_packets("0,N/A,K_\n", 0), Err(ProbeError::NoTimestamps)));
        assert!(matches!(parse_packets("", 0), Err(ProbeError::NoPackets)));
        // Only a cover picture's packet: the chunked stream has none.
        assert!(matches!(parse_packets("1,0,K_\n", 0), Err(ProbeError::NoPackets)));
    }

    #[test]
    fn rationals() {
        assert_eq!(Rational::parse("1/90000"), Some(Rational { num: 1, den: 90000 }));
        assert_eq!(Rational::parse("x"), None);
        assert!((Rational { num: 1, den: 25 }.seconds(50) - 2.0).abs() < 1e-12);
    }
}
