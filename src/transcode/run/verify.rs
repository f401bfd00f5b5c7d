//! Verify: an encoded chunk is accepted only if it holds exactly the planned
//! frames, starts where planned, and has the job's codec parameters (nodes of
//! different architectures run different ffmpeg builds).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::transcode::plan::{Chunk, Plan};
use crate::transcode::probe::Rational;

/// What must be identical in every chunk for a stream-copy concat to make
/// one valid stream, and what the output's video stream must share with one
/// plain ffmpeg run: ffprobe's names and values (`tv`, `bt709`, `tb`; level
/// as a number; `unknown` where ffprobe names none). The fields after
/// `field_order` came later: an older dffmpeg's reference has them empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodecParams {
    pub codec: String,
    pub profile: String,
    pub pix_fmt: String,
    pub width: u32,
    pub height: u32,
    pub sample_aspect_ratio: String,
    pub field_order: String,
    #[serde(default)]
    pub level: String,
    #[serde(default)]
    pub color_range: String,
    #[serde(default)]
    pub color_space: String,
    #[serde(default)]
    pub color_primaries: String,
    #[serde(default)]
    pub color_transfer: String,
    #[serde(default)]
    pub chroma_location: String,
    /// The stream's time base (`1/12800`): not a property every chunk must
    /// share (theirs is NUT's) but, in the plain run's, what the output's
    /// muxer chose for the video, which the merge asks for too (see
    /// [`crate::transcode::ffmpeg::merge`]). Empty where it must be left to ffmpeg.
    #[serde(default)]
    pub time_base: String,
}

impl CodecParams {
    /// Every compared property: its name in messages and its value.
    pub fn properties(&self) -> [(&'static str, String); 13] {
        [
            ("codec", self.codec.clone()),
            ("profile", self.profile.clone()),
            ("level", self.level.clone()),
            ("pixel format", self.pix_fmt.clone()),
            ("width", self.width.to_string()),
            ("height", self.height.to_string()),
            ("sample aspect ratio", self.sample_aspect_ratio.clone()),
            ("field order", self.field_order.clone()),
            ("colour range", self.color_range.clone()),
            ("colour space", self.color_space.clone()),
            ("colour primaries", self.color_primaries.clone()),
            ("colour transfer", self.color_transfer.clone()),
            ("chroma location", self.chroma_location.clone()),
        ]
    }

    /// Every field that differs, as `name ours differs from the job's theirs`.
    pub fn difference(&self, reference: &CodecParams) -> Option<String> {
        let diffs: Vec<String> = self
            .properties()
            .into_iter()
            .zip(reference.properties())
            .filter(|((_, a), (_, b))| a != b)
            .map(|((name, a), (_, b))| format!("{name} {a} differs from the job's {b}"))
            .collect();
        (!diffs.is_empty()).then(|| diffs.join("; "))
    }
}

/// What an encoded chunk holds, read from its packets (not from the
/// container's start time, which libavformat leaves unknown for some
/// encoders: one frame of reorder delay, as mpeg2video and mpeg4 with
/// B-frames have, gives a NUT file whose first packet has no decode time).
#[derive(Debug, Clone)]
pub struct ChunkFacts {
    pub params: CodecParams,
    /// Packets of the video stream (one frame each: every encoder dffmpeg
    /// accepts makes one packet per frame).
    pub frames: u64,
    /// Streams in the file (a chunk holds its video stream alone).
    pub streams: Option<usize>,
    /// The earliest presentation time of its packets, in seconds.
    pub start: Option<f64>,
    /// Packets without a presentation time.
    pub untimed: u64,
    /// The encoder that made it (`libx264`), from the stream's tag.
    pub encoder: Option<String>,
    /// The file's size as the node saw it (a node's record of a chunk it
    /// wrote in the shared directory).
    pub bytes: Option<u64>,
}

/// Why an encoded chunk (or the preflight's frame) is not accepted. Plain
/// data (Clone, PartialEq: it travels inside an attempt's result); the
/// errors of ffprobe and of its output are kept as their text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    #[error("unreadable chunk: {0}")]
    Unreadable(String),
    /// ffprobe itself failed (missing, could not run).
    #[error("{0}")]
    Probe(String),
    #[error("ffprobe output: {0}")]
    Output(String),
    #[error("chunk has no video stream")]
    NoVideo,
    #[error("holds {got} frames, {planned} planned")]
    Frames { got: u64, planned: u64 },
    #[error("starts at {got:.6} s, {planned:.6} s planned")]
    Start { got: f64, planned: f64 },
    #[error("has no start time")]
    NoStart,
    #[error("holds {0} streams, not its video stream alone")]
    Streams(usize),
    #[error("is {size} bytes, more than any encode of its frames should be ({cap} bytes)")]
    TooLarge { size: u64, cap: u64 },
    #[error("{0} packets have no timestamp")]
    Untimed(u64),
}

/// The most an encoded chunk of `frames` frames of `megapixels` each may
/// take: 8 bytes a pixel (more than raw 4:4:4 at 16 bits) plus 16 MiB of
/// headers — a bound on what a node can make the controller store or read.
pub fn chunk_cap(frames: u64, megapixels: f64) -> u64 {
    (16 << 20) + (frames as f64 * megapixels.max(0.0) * 8e6).min(1e15) as u64
}

impl From<crate::transcode::probe::ProbeError> for VerifyError {
    fn from(e: crate::transcode::probe::ProbeError) -> Self {
        match e {
            crate::transcode::probe::ProbeError::Unreadable(line) => VerifyError::Unreadable(line),
            other => VerifyError::Probe(other.to_string()),
        }
    }
}

/// Read an encoded chunk's facts (its packets' timestamps, no decoding).
pub async fn inspect(path: &Path) -> Result<ChunkFacts, VerifyError> {
    inspect_from(path, std::process::Stdio::null()).await
}

/// What ffprobe shows of a chunk (`-show_entries`): the same fields on the
/// controller and in a node's record (`encode.sh`).
pub const FIELDS: &str = "stream=codec_name,profile,level,pix_fmt,width,height,sample_aspect_ratio,\
                          field_order,color_range,color_space,color_primaries,color_transfer,\
                          chroma_location,time_base:stream_tags=encoder:packet=pts:format=nb_streams";

/// [`inspect`] with a given stdin: `pipe:0` reads a chunk as it is encoded.
pub async fn inspect_from(path: &Path, stdin: std::process::Stdio) -> Result<ChunkFacts, VerifyError> {
    let args = ["-select_streams", "v:0", "-of", "default=nw=1", "-show_entries", FIELDS];
    let out = crate::transcode::probe::ffprobe_from(&args, path, stdin).await?;
    parse_record(&String::from_utf8_lossy(&out))
}

/// The most lines a record may have besides `pts=` lines.
const MAX_RECORD_LINES: usize = 64;

/// Read a chunk's facts from ffprobe's `key=value` lines ([`FIELDS`]):
/// either one `pts=` line per packet (ffprobe's own output, on the
/// controller) or a node's summary of them (`packets=`, `untimed=`,
/// `first_pts=`, see `encode.sh`). `N/A` and `unknown` are what ffprobe
/// prints for what it does not know. A record that says its probe failed,
/// or lacks the stream, is refused.
pub fn parse_record(text: &str) -> Result<ChunkFacts, VerifyError> {
    let mut fields = std::collections::HashMap::new();
    let (mut packets, mut untimed, mut first) = (0u64, 0u64, None::<i64>);
    let mut summary = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        match key {
            "pts" => match value.parse::<i64>() {
                Ok(p) => {
                    packets += 1;
                    first = Some(first.map_or(p, |f| f.min(p)));
                }
                Err(_) => {
                    packets += 1;
                    untimed += 1;
                }
            },
            "packets" | "untimed" | "first_pts" => {
                summary = true;
                fields.insert(key.to_string(), value.to_string());
            }
            _ if fields.len() < MAX_RECORD_LINES => {
                let key = if key.eq_ignore_ascii_case("TAG:encoder") { "encoder" } else { key };
                fields.entry(key.to_string()).or_insert_with(|| value.to_string());
            }
            _ => {}
        }
    }
    if let Some(e) = fields.get("probe_error") {
        return Err(VerifyError::Unreadable(crate::text::printable(crate::text::cut(e, 1000))));
    }
    if fields.get("probe_status").is_some_and(|s| s != "0") {
        return Err(VerifyError::Probe("ffprobe failed on the node".into()));
    }
    if summary {
        let number = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
        packets = number("packets").ok_or_else(|| VerifyError::Output("no packet count".into()))?;
        untimed = number("untimed").unwrap_or(packets);
        first = fields.get("first_pts").and_then(|v| v.parse().ok());
    }
    let known = |k: &str| fields.get(k).filter(|v| !matches!(v.as_str(), "N/A" | "unknown" | "")).cloned();
    let codec = known("codec_name").ok_or(VerifyError::NoVideo)?;
    let number = |k: &str| known(k).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    let tb = known("time_base").as_deref().and_then(Rational::parse).filter(|t| t.num > 0 && t.den > 0);
    let encoder = known("encoder").and_then(|e| e.split_whitespace().last().map(str::to_string));
    let params = CodecParams {
        codec,
        profile: known("profile").unwrap_or_default(),
        pix_fmt: known("pix_fmt").unwrap_or_default(),
        width: number("width"),
        height: number("height"),
        sample_aspect_ratio: known("sample_aspect_ratio").unwrap_or_else(|| "1:1".into()),
        field_order: known("field_order").unwrap_or_else(|| "unknown".into()),
        level: known("level").unwrap_or_else(|| "unknown".into()),
        color_range: known("color_range").unwrap_or_else(|| "unknown".into()),
        color_space: known("color_space").unwrap_or_else(|| "unknown".into()),
        color_primaries: known("color_primaries").unwrap_or_else(|| "unknown".into()),
        color_transfer: known("color_transfer").unwrap_or_else(|| "unknown".into()),
        chroma_location: known("chroma_location").unwrap_or_else(|| "unspecified".into()),
        time_base: known("time_base").unwrap_or_default(),
    };
    Ok(ChunkFacts {
        params,
        frames: packets,
        streams: known("nb_streams").and_then(|n| n.parse().ok()),
        start: tb.zip(first).map(|(tb, first)| tb.seconds(first)),
        untimed,
        encoder,
        bytes: known("bytes").and_then(|b| b.trim().parse().ok()),
    })
}

/// Check the facts of an encoded chunk against the plan (frames and start;
/// codec parameters are compared with the job's reference by the caller).
pub fn check(facts: &ChunkFacts, chunk: &Chunk, plan: &Plan) -> Result<(), VerifyError> {
    if let Some(n) = facts.streams.filter(|&n| n != 1) {
        return Err(VerifyError::Streams(n));
    }
    if facts.frames != chunk.frames {
        return Err(VerifyError::Frames { got: facts.frames, planned: chunk.frames });
    }
    if facts.untimed > 0 {
        return Err(VerifyError::Untimed(facts.untimed));
    }
    let want = plan.time_base.seconds(chunk.start) + plan.ts_shift();
    // The encoder may put frames on its own time grid (1/frame rate): allow
    // half a frame, which still tells a wrong first frame apart.
    let tolerance = (plan.frame_seconds / 2.0).max(0.001);
    match facts.start {
        Some(t) if (t - want).abs() < tolerance => {}
        Some(got) => return Err(VerifyError::Start { got, planned: want }),
        None => return Err(VerifyError::NoStart),
    }
    Ok(())
}

/// Why a merged output is not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutputError {
    #[error("the merged file cannot be read: {0}")]
    Unreadable(String),
    #[error("the merged file holds {got} video frames, {planned} planned")]
    Frames { got: u64, planned: u64 },
    #[error("the merged file has {got} streams, {planned} expected")]
    Streams { got: usize, planned: usize },
}

#[derive(Debug, Deserialize)]
struct OutputJson {
    #[serde(default)]
    streams: Vec<OutputStreamJson>,
}

#[derive(Debug, Deserialize)]
struct OutputStreamJson {
    #[serde(default)]
    codec_type: String,
    #[serde(default)]
    nb_read_packets: Option<String>,
}

/// Check a merged output end to end before it replaces anything: its first
/// video stream holds every planned frame, and it has the expected streams
/// (the video and the side streams). Data streams do not count: the muxer
/// may add its own (a DVD's navigation packets).
pub async fn output(path: &Path, frames: u64, streams: usize) -> Result<(), OutputError> {
    let args =
        ["-count_packets", "-print_format", "json", "-show_entries", "stream=codec_type,nb_read_packets"];
    let out = crate::transcode::probe::ffprobe(&args, path)
        .await
        .map_err(|e| OutputError::Unreadable(e.to_string()))?;
    check_output(&out, frames, streams)
}

fn check_output(json: &[u8], frames: u64, streams: usize) -> Result<(), OutputError> {
    let parsed: OutputJson =
        serde_json::from_slice(json).map_err(|e| OutputError::Unreadable(e.to_string()))?;
    let video = parsed.streams.iter().find(|s| s.codec_type == "video");
    let got = video.and_then(|s| s.nb_read_packets.as_deref()).and_then(|n| n.parse().ok());
    let got = got.unwrap_or(0);
    if got != frames {
        return Err(OutputError::Frames { got, planned: frames });
    }
    let n = parsed.streams.iter().filter(|s| s.codec_type != "data").count();
    if n != streams {
        return Err(OutputError::Streams { got: n, planned: streams });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::probe::Rational;

    /// ffprobe's answer for a chunk of `pts` (in 1/51200, as NUT has 25
    /// frames/s), packets in the order given; `N/A` for a missing pts.
    fn chunk_record(pts: &[Option<i64>]) -> String {
        let mut text = String::new();
        for p in pts {
            match p {
                Some(p) => text.push_str(&format!("pts={p}\n")),
                None => text.push_str("pts=N/A\n"),
            }
        }
        text + "codec_name=h264\nprofile=High\npix_fmt=yuv420p\nwidth=320\nheight=240\n\
                sample_aspect_ratio=1:1\nfield_order=unknown\ncolor_range=unknown\ntime_base=1/51200\n\
                chroma_location=unspecified\nTAG:encoder=Lavc59.37.100 libx264\nnb_streams=1\n"
    }

    /// 50 frames from 12 s, decode order I P B B P B B ... (one frame of
    /// reorder delay, as MPEG-2 with B-frames: the container leaves the
    /// first packet's decode time, and with it the start time, unknown).
    fn facts() -> ChunkFacts {
        let mut order: Vec<i64> = vec![0];
        let mut anchor = 0;
        while order.len() < 50 {
            let next = (anchor + 3).min(49);
            order.push(next);
            order.extend(anchor + 1..next);
            anchor = next;
        }
        let pts: Vec<Option<i64>> = order.iter().map(|i| Some(614400 + i * 2048)).collect();
        parse_record(&chunk_record(&pts)).unwrap()
    }

    fn plan(frames: u64, start: i64) -> (Chunk, Plan) {
        let c = Chunk {
            index: 1,
            start,
            end: None,
            frames,
            first_packet: 0,
            packets: 0,
            seek_pts: 0,
            trim_start: None,
            trim_end: None,
        };
        let first = Chunk { index: 0, start: 0, ..c.clone() };
        let p = Plan {
            time_base: Rational { num: 1, den: 25 },
            chunks: vec![first, c.clone()],
            total_frames: 0,
            frame_seconds: 0.04,
            skipped_leading: 0,
        };
        (c, p)
    }

    #[test]
    fn a_short_output_or_a_missing_stream_is_refused() {
        let json = br#"{"streams":[{"codec_type":"video","nb_read_packets":"33"},{"codec_type":"audio","nb_read_packets":"50"}]}"#;
        assert_eq!(check_output(json, 33, 2), Ok(()));
        // A DVD: the muxer's navigation packets first, a data stream.
        let dvd = br#"{"streams":[{"codec_type":"data","nb_read_packets":"9"},{"codec_type":"video","nb_read_packets":"33"},{"codec_type":"audio","nb_read_packets":"50"}]}"#;
        assert_eq!(check_output(dvd, 33, 2), Ok(()));
        assert_eq!(check_output(json, 300, 2), Err(OutputError::Frames { got: 33, planned: 300 }));
        assert_eq!(check_output(json, 33, 3), Err(OutputError::Streams { got: 2, planned: 3 }));
        assert!(check_output(b"{", 33, 2).is_err());
    }

    #[test]
    fn accepts_the_planned_chunk() {
        let f = facts();
        assert_eq!(f.params.field_order, "unknown");
        let (c, p) = plan(50, 50);
        assert!(check(&f, &c, &p).is_ok());
    }

    #[test]
    fn the_start_is_the_earliest_packet_not_the_first() {
        let f = parse_record(&chunk_record(&[Some(614400 + 2 * 2048), Some(614400), Some(614400 + 2048)]))
            .unwrap();
        assert_eq!((f.frames, f.start, f.untimed), (3, Some(12.0), 0));
    }

    #[test]
    fn packets_without_timestamps_are_refused() {
        let (c, p) = plan(3, 50);
        let f = parse_record(&chunk_record(&[Some(614400), None, Some(614400 + 2048)])).unwrap();
        assert_eq!(check(&f, &c, &p), Err(VerifyError::Untimed(1)));
        // A time twice, as a source may have it: kept.
        let f = parse_record(&chunk_record(&[Some(614400), Some(614400), Some(614400 + 2048)])).unwrap();
        assert_eq!(check(&f, &c, &p), Ok(()));
        assert_eq!(
            check(&parse_record(&chunk_record(&[])).unwrap(), &c, &p).unwrap_err().to_string(),
            "holds 0 frames, 3 planned"
        );
    }

    #[test]
    fn rejects_wrong_count_start_or_params() {
        let f = facts();
        let (c, p) = plan(51, 50);
        let e = check(&f, &c, &p).unwrap_err();
        assert!(matches!(e, VerifyError::Frames { got: 50, planned: 51 }), "{e:?}");
        assert_eq!(e.to_string(), "holds 50 frames, 51 planned");
        let (c, p) = plan(50, 75);
        assert!(check(&f, &c, &p).unwrap_err().to_string().starts_with("starts at 12.000000"));
        let mut other = f.params.clone();
        other.pix_fmt = "yuv444p".into();
        assert_eq!(
            f.params.difference(&other),
            Some("pixel format yuv420p differs from the job's yuv444p".into())
        );
    }

    #[test]
    fn colour_tags_field_order_and_level_are_compared() {
        let f = parse_record("codec_name=hevc\nprofile=Main 10\nlevel=93\npix_fmt=yuv420p10le\nwidth=320\nheight=240\ncolor_range=tv\ncolor_space=bt2020nc\ncolor_primaries=bt2020\ncolor_transfer=smpte2084\nchroma_location=left\nfield_order=tb\npts=0\n").unwrap();
        let p = &f.params;
        assert_eq!(
            (p.level.as_str(), p.color_transfer.as_str(), p.field_order.as_str()),
            ("93", "smpte2084", "tb")
        );
        // Left out by ffprobe: unknown.
        let g = facts().params;
        assert_eq!(
            (g.color_range.as_str(), g.level.as_str(), g.chroma_location.as_str()),
            ("unknown", "unknown", "unspecified")
        );
        let mut other = p.clone();
        other.color_range = "pc".into();
        other.level = "90".into();
        assert_eq!(
            p.difference(&other),
            Some("level 93 differs from the job's 90; colour range tv differs from the job's pc".into())
        );
    }

    #[test]
    fn a_nodes_summary_reads_as_its_packets() {
        let pts = [Some(614400 + 2048), Some(614400), None];
        let full = parse_record(&chunk_record(&pts)).unwrap();
        let mut summary: String =
            chunk_record(&[]).lines().filter(|l| !l.starts_with("pts=")).map(|l| format!("{l}\n")).collect();
        summary += "probe_status=0\npackets=3\nuntimed=1\nfirst_pts=614400\nbytes=1234\n";
        let node = parse_record(&summary).unwrap();
        assert_eq!((node.frames, node.untimed, node.start), (full.frames, full.untimed, full.start));
        assert_eq!(node.params, full.params);
        assert_eq!(node.bytes, Some(1234));
        assert_eq!(node.encoder.as_deref(), Some("libx264"));
        // A failed probe on the node, or no stream, is no chunk.
        let failed = format!("{summary}probe_error=pipe:0: Invalid data found\n");
        assert!(matches!(parse_record(&failed), Err(VerifyError::Unreadable(_))));
        assert!(matches!(parse_record("packets=3\n"), Err(VerifyError::NoVideo)));
        assert!(matches!(parse_record("codec_name=h264\nprobe_status=1\n"), Err(VerifyError::Probe(_))));
    }
}
