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

#[derive(Debug, Deserialize)]
struct StreamJson {
    #[serde(default)]
    codec_name: String,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    pix_fmt: Option<String>,
    #[serde(default)]
    width: u32,
    #[serde(default)]
    height: u32,
    #[serde(default)]
    sample_aspect_ratio: Option<String>,
    #[serde(default)]
    field_order: Option<String>,
    #[serde(default)]
    level: Option<i64>,
    #[serde(default)]
    color_range: Option<String>,
    #[serde(default)]
    color_space: Option<String>,
    #[serde(default)]
    color_primaries: Option<String>,
    #[serde(default)]
    color_transfer: Option<String>,
    #[serde(default)]
    chroma_location: Option<String>,
    #[serde(default)]
    time_base: Option<String>,
    #[serde(default)]
    tags: std::collections::HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct PacketJson {
    pts: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct FormatJson {
    #[serde(default)]
    nb_streams: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct ChunkJson {
    #[serde(default)]
    streams: Vec<StreamJson>,
    #[serde(default)]
    packets: Vec<PacketJson>,
    format: Option<FormatJson>,
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

/// [`inspect`] with a given stdin: `pipe:0` reads a chunk as it is encoded.
pub async fn inspect_from(path: &Path, stdin: std::process::Stdio) -> Result<ChunkFacts, VerifyError> {
    let fields = "stream=codec_name,profile,level,pix_fmt,width,height,sample_aspect_ratio,field_order,\
                  color_range,color_space,color_primaries,color_transfer,chroma_location,time_base:\
                  stream_tags=encoder:packet=pts:format=nb_streams";
    let args = ["-select_streams", "v:0", "-print_format", "json=compact=1", "-show_entries", fields];
    let out = crate::transcode::probe::ffprobe_from(&args, path, stdin).await?;
    parse_facts(&out)
}

fn parse_facts(json: &[u8]) -> Result<ChunkFacts, VerifyError> {
    let parsed: ChunkJson = serde_json::from_slice(json).map_err(|e| VerifyError::Output(e.to_string()))?;
    let s = parsed.streams.into_iter().next().ok_or(VerifyError::NoVideo)?;
    // `encoder` (NUT, MP4) or `ENCODER` (Matroska): `Lavc59.37.100 libx264`.
    let tag = s.tags.iter().find(|(k, _)| k.eq_ignore_ascii_case("encoder")).map(|(_, v)| v);
    let encoder = tag.and_then(|e| e.split_whitespace().last()).map(str::to_string);
    let tb = s.time_base.as_deref().and_then(Rational::parse).filter(|t| t.num > 0 && t.den > 0);
    // (Two packets may share a time: a source can have them, and a chunk
    // keeps the source's times.)
    let pts: Vec<i64> = parsed.packets.iter().filter_map(|p| p.pts).collect();
    let untimed = (parsed.packets.len() - pts.len()) as u64;
    let streams = parsed.format.as_ref().and_then(|f| f.nb_streams);
    Ok(ChunkFacts {
        streams,
        encoder,
        frames: parsed.packets.len() as u64,
        start: tb.zip(pts.iter().min()).map(|(tb, &first)| tb.seconds(first)),
        untimed,
        params: params(s),
    })
}

/// ffprobe leaves out what it does not know: `unknown` then.
fn params(s: StreamJson) -> CodecParams {
    let known = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    CodecParams {
        codec: s.codec_name,
        profile: s.profile.unwrap_or_default(),
        pix_fmt: s.pix_fmt.unwrap_or_default(),
        width: s.width,
        height: s.height,
        sample_aspect_ratio: s.sample_aspect_ratio.unwrap_or_else(|| "1:1".into()),
        field_order: known(s.field_order),
        level: known(s.level.map(|l| l.to_string())),
        color_range: known(s.color_range),
        color_space: known(s.color_space),
        color_primaries: known(s.color_primaries),
        color_transfer: known(s.color_transfer),
        chroma_location: s.chroma_location.unwrap_or_else(|| "unspecified".into()),
        time_base: s.time_base.unwrap_or_default(),
    }
}

/// Read an encoded chunk and check it against the plan: the planned
/// frames and start (codec parameters are compared by the caller).
pub async fn chunk(plan: &Plan, chunk: &Chunk, part: &Path) -> Result<ChunkFacts, VerifyError> {
    let facts = inspect(part).await?;
    check(&facts, chunk, plan)?;
    Ok(facts)
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
    /// frames/s), packets in the order given; `null` for a missing pts.
    fn chunk_json(pts: &[Option<i64>]) -> Vec<u8> {
        let packets: Vec<String> = pts
            .iter()
            .map(|p| match p {
                Some(p) => format!(r#"{{"pts":{p}}}"#),
                None => "{}".into(),
            })
            .collect();
        format!(
            r#"{{"packets":[{}],"streams":[{{"codec_name":"h264","profile":"High","pix_fmt":"yuv420p","width":320,"height":240,"sample_aspect_ratio":"1:1","time_base":"1/51200"}}]}}"#,
            packets.join(",")
        )
        .into_bytes()
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
        parse_facts(&chunk_json(&pts)).unwrap()
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
        let f =
            parse_facts(&chunk_json(&[Some(614400 + 2 * 2048), Some(614400), Some(614400 + 2048)])).unwrap();
        assert_eq!((f.frames, f.start, f.untimed), (3, Some(12.0), 0));
    }

    #[test]
    fn packets_without_timestamps_are_refused() {
        let (c, p) = plan(3, 50);
        let f = parse_facts(&chunk_json(&[Some(614400), None, Some(614400 + 2048)])).unwrap();
        assert_eq!(check(&f, &c, &p), Err(VerifyError::Untimed(1)));
        // A time twice, as a source may have it: kept.
        let f = parse_facts(&chunk_json(&[Some(614400), Some(614400), Some(614400 + 2048)])).unwrap();
        assert_eq!(check(&f, &c, &p), Ok(()));
        assert_eq!(
            check(&parse_facts(&chunk_json(&[])).unwrap(), &c, &p).unwrap_err().to_string(),
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
        let f = parse_facts(br#"{"streams":[{"codec_name":"hevc","profile":"Main 10","level":93,"pix_fmt":"yuv420p10le","width":320,"height":240,"color_range":"tv","color_space":"bt2020nc","color_primaries":"bt2020","color_transfer":"smpte2084","chroma_location":"left","field_order":"tb","nb_read_packets":"1"}]}"#).unwrap();
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
}
