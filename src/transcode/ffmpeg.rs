//! The ffmpeg and ffprobe command lines of the pipeline, as argv vectors.
//! Pure functions: what runs where is decided elsewhere.

use serde::{Deserialize, Serialize};

use super::plan::{Chunk, Plan};
use super::probe::Rational;
use super::verify::CodecParams;

/// Job-wide settings of every chunk encode; stored with the plan so that a
/// resumed job encodes its remaining chunks exactly like the first ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodeSpec {
    /// The user's encoder options (plus `-c:v` when the user gave none).
    pub codec_args: Vec<String>,
    /// Rotation applied before the user's filter, as ffmpeg's autorotate
    /// would do on a single machine (the chunk files carry no display matrix).
    pub rotate_filter: Option<String>,
    pub user_filter: Option<String>,
    /// Source time base, used as encoder time base for VFR input so that
    /// irregular timestamps are kept exactly.
    pub vfr_time_base: Option<Rational>,
    /// Puts the codec's parameter sets in-band before every keyframe, so
    /// the merged stream does not depend on the first chunk's extradata
    /// (nodes may run different encoder builds).
    #[serde(default)]
    pub in_band_headers: bool,
    /// What one plain ffmpeg run gives the output's video stream (its
    /// preflight, [`plain_first_frame`]). The properties it decides from the
    /// input's first frame go to every chunk's encoder and to the merge, see
    /// [`decided`]. None in jobs of an older dffmpeg.
    #[serde(default)]
    pub plain: Option<CodecParams>,
}

/// Codecs whose extradata is a plain header that may be repeated in-band.
pub fn headers_can_go_in_band(codec: &str) -> bool {
    matches!(codec, "h264" | "hevc" | "mpeg4" | "mpeg2video" | "mpeg1video")
}

const QUIET: [&str; 5] = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"];

fn s(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// `-ss` value just before a pts: the split then starts at the first
/// keyframe at or after it, which is the keyframe at `pts`.
fn seek_before(pts: i64, tb: Rational) -> String {
    let micros = (pts as i128 * tb.num as i128 * 1_000_000).div_euclid(tb.den as i128) - 1;
    secs(micros as f64 / 1e6)
}

/// Copy the packets of one chunk out of the source, no re-encoding:
/// timestamps kept (`-copyts`), from the chunk's keyframe, exactly
/// `chunk.packets` packets.
pub fn split(source: &str, video_index: usize, plan: &Plan, chunk: &Chunk, dest: &str) -> Vec<String> {
    let mut a = s(&QUIET);
    if chunk.seek_pts != plan.first_pts() {
        a.extend(s(&["-seek_timestamp", "1", "-ss"]));
        a.push(seek_before(chunk.seek_pts, plan.time_base));
    }
    a.extend(s(&["-copyts", "-i", source, "-map"]));
    a.push(format!("0:{video_index}"));
    // -copypriorss 0: drop what the seek read before the keyframe (the
    // demuxer may land on an earlier one).
    a.extend(s(&["-c", "copy", "-copypriorss", "0", "-frames:v"]));
    a.push(chunk.packets.to_string());
    a.extend(["-output_ts_offset".into(), secs(plan.ts_shift())]);
    a.extend(s(&["-avoid_negative_ts", "disabled", "-f", "nut", "-y", dest]));
    a
}

/// Where an encoder reads its chunk from.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The chunk's packets as NUT (a file or `pipe:0`), made by [`split`]:
    /// timestamps already shifted.
    Nut(String),
    /// The source itself (shared storage: the node sees it at the same
    /// path). The encoder seeks to the chunk's keyframe and shifts the
    /// timestamps like [`split`] does; the chunk filter's trim keeps its
    /// frames exactly as from a split.
    Source { path: String, video_index: usize, seek: Option<String>, shift: f64 },
}

impl Input {
    /// The source, read directly, for one chunk.
    pub fn source(source: &str, video_index: usize, plan: &Plan, chunk: &Chunk) -> Input {
        let seek = (chunk.seek_pts != plan.first_pts()).then(|| seek_at(chunk.seek_pts, plan.time_base));
        Input::Source { path: source.to_string(), video_index, seek, shift: plan.ts_shift() }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Input::Nut(path) => {
                let mut a = s(&["-copyts", "-f", "nut", "-i"]);
                a.extend([path.clone(), "-map".into(), "0:v:0".into()]);
                a
            }
            Input::Source { path, video_index, seek, shift } => {
                // No autorotate: the spec's rotate filter does it, as for a
                // NUT chunk (which has no display matrix). No accurate seek:
                // the trim cuts, wherever the demuxer landed.
                let mut a = s(&["-noautorotate"]);
                if let Some(ss) = seek {
                    a.extend(s(&["-noaccurate_seek", "-seek_timestamp", "1", "-ss"]));
                    a.push(ss.clone());
                }
                a.extend(["-itsoffset".into(), secs(*shift)]);
                a.extend(s(&["-copyts", "-i"]));
                a.extend([path.clone(), "-map".into(), format!("0:{video_index}")]);
                a
            }
        }
    }
}

/// `-ss` value at a keyframe's pts, rounded up to the microsecond: a
/// demuxer that seeks to the last keyframe at or before it lands on this
/// one, not the one before (which would be decoded for nothing).
fn seek_at(pts: i64, tb: Rational) -> String {
    secs(micros_up(pts, tb) as f64 / 1e6)
}

/// A timestamp in microseconds, rounded up.
fn micros_up(pts: i64, tb: Rational) -> i128 {
    let num = pts as i128 * tb.num as i128 * 1_000_000;
    let den = tb.den as i128;
    num.div_euclid(den) + i128::from(num.rem_euclid(den) != 0)
}

/// Where a chunk's first frame is in its file (the split's and the
/// encoder's shifted timestamps), rounded up to the microsecond like
/// [`seek_at`]: the concat demuxer seeks there (to the keyframe at or
/// before it: the chunk's first packet) and maps it to the chunk's place.
pub fn chunk_inpoint(plan: &Plan, chunk: &Chunk) -> String {
    // The shift is whole seconds (see `Plan::ts_shift`).
    let micros = micros_up(chunk.start, plan.time_base) + (plan.ts_shift() * 1e6).round() as i128;
    format!("{}.{:06}", micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000))
}

/// Seconds as ffmpeg option text, microsecond precision.
fn secs(x: f64) -> String {
    format!("{x:.6}")
}

/// The video filter of a chunk: keep exactly its frames (cut between two
/// frames, half a frame away from either), then rotation, then the user's.
pub fn chunk_filter(spec: &EncodeSpec, chunk: &Chunk, shift: f64) -> String {
    let mut trim = Vec::new();
    if let Some(st) = chunk.trim_start {
        trim.push(format!("start={}", secs(st + shift)));
    }
    if let Some(e) = chunk.trim_end {
        trim.push(format!("end={}", secs(e + shift)));
    }
    let mut chain = Vec::new();
    if !trim.is_empty() {
        chain.push(format!("trim={}", trim.join(":")));
    }
    chain.extend(spec.rotate_filter.clone());
    chain.extend(spec.user_filter.clone());
    if chain.is_empty() {
        chain.push("null".into());
    }
    chain.join(",")
}

/// What differs from one chunk's encode to the next: its video filter
/// ([`chunk_filter`]) and, for MPEG-1/2, where its GOP timecodes start.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkVideo {
    pub filter: String,
    /// `-gop_timecode` for this chunk (replacing the user's): an encoder
    /// counts its GOP timecodes from its own first frame, so every chunk
    /// but the first is told where plain ffmpeg's count would be.
    pub gop_timecode: Option<String>,
}

impl ChunkVideo {
    pub fn new(spec: &EncodeSpec, plan: &Plan, chunk: &Chunk) -> ChunkVideo {
        let mpeg12 =
            spec.plain.as_ref().is_some_and(|p| matches!(p.codec.as_str(), "mpeg1video" | "mpeg2video"));
        let first: u64 = plan.chunks.iter().take_while(|c| c.index != chunk.index).map(|c| c.frames).sum();
        let gop_timecode = match (mpeg12, first, plan.frame_seconds) {
            (true, 1.., secs) if secs > 0.0 => {
                super::encoders::gop_timecode(&spec.codec_args, (1.0 / secs).round() as i64, first)
            }
            _ => None,
        };
        ChunkVideo { filter: chunk_filter(spec, chunk, plan.ts_shift()), gop_timecode }
    }
}

/// Passed as `output` to [`encode`]: stop before the output part, for
/// [`preflight`] to finish the command line.
const PREFLIGHT_MARK: &str = "\0preflight";

/// Encode only the first frame of a chunk into `output`: the controller's
/// check of the user's options and the source of the job's reference codec
/// parameters.
pub fn preflight(spec: &EncodeSpec, video: &ChunkVideo, input: &Input, output: &str) -> Vec<String> {
    let mut a = encode(spec, video, None, input, PREFLIGHT_MARK);
    a.extend(s(&[
        "-frames:v",
        "1",
        "-an",
        "-sn",
        "-dn",
        "-avoid_negative_ts",
        "disabled",
        "-f",
        "nut",
        "-y",
        output,
    ]));
    a
}

/// Encode one chunk: NUT out (stdout or file), progress as `key=value`
/// lines on stderr.
pub fn encode(
    spec: &EncodeSpec,
    video: &ChunkVideo,
    threads: Option<u32>,
    input: &Input,
    output: &str,
) -> Vec<String> {
    let mut a = s(&QUIET);
    a.extend(s(&["-nostats", "-progress", "pipe:2"]));
    if let Some(t) = threads {
        a.extend(["-threads".into(), t.to_string()]);
    }
    a.extend(input.args());
    a.extend(["-vf".to_string(), video.filter.clone()]);
    a.extend(s(&["-vsync", "passthrough"]));
    if let Some(tb) = spec.vfr_time_base {
        a.extend(["-enc_time_base:v".into(), tb.to_string()]);
    }
    if let Some(t) = threads {
        a.extend(["-threads".into(), t.to_string()]);
    }
    match &video.gop_timecode {
        Some(tc) => {
            let mut args = spec.codec_args.iter();
            while let Some(arg) = args.next() {
                match arg.split(':').next() == Some("-gop_timecode") {
                    true => drop(args.next()),
                    false => a.push(arg.clone()),
                }
            }
            a.extend(["-gop_timecode".into(), tc.clone()]);
        }
        None => a.extend(spec.codec_args.iter().cloned()),
    }
    a.extend(spec.plain.as_ref().map(decided).unwrap_or_default());
    if spec.in_band_headers {
        a.extend(s(&["-bsf:v", "dump_extra=freq=keyframe"]));
    }
    if output == PREFLIGHT_MARK {
        return a;
    }
    a.extend(s(&["-an", "-sn", "-dn", "-avoid_negative_ts", "disabled", "-f", "nut", "-y", output]));
    a
}

/// Encode every stream but the chunked video once, from the source, with
/// the user's options, into the output's own format (so ffmpeg's defaults
/// for that format apply, as in a plain run).
pub fn side(
    source: &str,
    video_index: usize,
    codec_args: &[String],
    format: &str,
    dest: &str,
) -> Vec<String> {
    let mut a = s(&QUIET);
    a.extend(s(&["-nostats", "-i", source]));
    a.extend(side_streams(video_index));
    a.extend(side_output(codec_args, format));
    a.push(dest.to_string());
    a
}

/// The streams [`side`] encodes: all but the chunked video, data and
/// attachments.
fn side_streams(video_index: usize) -> Vec<String> {
    let mut a = s(&["-map", "0", "-map"]);
    a.push(format!("-0:{video_index}"));
    a.extend(s(&["-map", "-0:d?", "-map", "-0:t?"]));
    a
}

/// The side file's encoder options and format, up to its name.
fn side_output(codec_args: &[String], format: &str) -> Vec<String> {
    let mut a = Vec::new();
    let format = match format {
        // The DVD muxer adds a stream of navigation packets, which the
        // merge must not copy as a stream of its own: the same MPEG-2
        // program stream without them (the merge into `dvd` makes its own).
        "dvd" => "vob",
        // These want a video stream first: Matroska holds their audio,
        // with the codec they default to (PCM) unless the user names one.
        "mxf" | "mxf_d10" | "mxf_opatom" | "dv" | "gxf" => {
            a.extend(s(&["-c:a", "pcm_s16le"]));
            "matroska"
        }
        f => f,
    };
    a.extend(codec_args.iter().cloned());
    a.extend(s(&["-f", format, "-y"]));
    a
}

/// The side streams as a node encodes them when only the controller has
/// the source: NUT on stdout, the audio decoded here into 32-bit float PCM
/// (what the decoder gives, losslessly: a copy of the packets would lose
/// the source's end trimming, and the encode one frame of padding),
/// subtitles copied. Their times are those the encode from the source
/// would see (the source's start taken off, as ffmpeg does).
pub fn side_feed(source: &str, video_index: usize) -> Vec<String> {
    let mut a = s(&QUIET);
    a.extend(s(&["-nostats", "-i", source]));
    a.extend(side_streams(video_index));
    a.extend(s(&["-c:a", "pcm_f32le", "-c:s", "copy", "-f", "nut", "pipe:1"]));
    a
}

/// [`side`] on a node from [`side_feed`]'s stream on stdin, its times
/// kept as they come (`-copyts`); the file name comes last (`side.sh`).
pub fn side_from_feed(codec_args: &[String], format: &str) -> Vec<String> {
    let mut a = s(&QUIET);
    a.extend(s(&["-nostats", "-copyts", "-f", "nut", "-i", "pipe:0", "-map", "0"]));
    a.extend(side_output(codec_args, format));
    a
}

pub struct MergeInputs<'a> {
    pub concat_list: &'a str,
    /// Side file and the offset (seconds) that puts its streams where they
    /// were relative to the video in the source.
    pub side: Option<(&'a str, f64, usize)>,
    pub source: &'a str,
    /// Shift that maps the source's first video frame to 0.
    pub source_offset: f64,
    pub video_index: usize,
    /// What one plain ffmpeg run gives the video stream.
    pub plain: Option<&'a CodecParams>,
    pub muxer_args: &'a [String],
    pub format: &'a str,
    pub dest: &'a str,
}

/// Stream-copy the chunks (concat demuxer) and the side streams into the
/// output; global metadata, chapters and each stream's metadata from the
/// source.
pub fn merge(m: &MergeInputs) -> Vec<String> {
    let mut a = s(&QUIET);
    a.extend(s(&["-nostats", "-copyts", "-f", "concat", "-safe", "0", "-i", m.concat_list]));
    let mut src_input = 1;
    if let Some((side, offset, _)) = m.side {
        a.extend(["-itsoffset".into(), secs(offset), "-i".into(), side.into()]);
        src_input = 2;
    }
    a.extend(["-itsoffset".into(), secs(-m.source_offset), "-i".into(), m.source.into()]);
    a.extend(s(&["-map", "0:v:0"]));
    if m.side.is_some() {
        a.extend(s(&["-map", "1"]));
    }
    a.extend(s(&["-c", "copy"]));
    // Stream copy takes codec options (field order and colour tags, which
    // the NUT chunks do not carry) into the output stream's parameters.
    a.extend(m.plain.map(decided).unwrap_or_default());
    a.extend(m.plain.map(time_base).unwrap_or_default());
    a.extend(["-map_metadata".into(), src_input.to_string()]);
    a.extend(["-map_chapters".into(), src_input.to_string()]);
    a.extend(["-map_metadata:s:0".into(), format!("{src_input}:s:{}", m.video_index)]);
    if let Some((_, _, n)) = m.side {
        for k in 0..n {
            a.extend([format!("-map_metadata:s:{}", k + 1), format!("1:s:{k}")]);
        }
    }
    a.extend(m.muxer_args.iter().cloned());
    a.extend(s(&["-f", m.format, "-y", m.dest]));
    a
}

/// One plain ffmpeg run of the first frame: the source's first video stream
/// that is no cover picture (the one dffmpeg chunks, `V`) as plain ffmpeg
/// sees it (autorotated, the user's filter and options), in the output's
/// format, for [`super::verify::inspect`] to read what it gives the output's
/// video stream.
pub struct PlainRun<'a> {
    pub source: &'a str,
    /// The video encoder's options ([`EncodeSpec::codec_args`]).
    pub codec_args: &'a [String],
    pub user_filter: Option<&'a str>,
    pub muxer_args: &'a [String],
    pub format: &'a str,
    pub dest: &'a str,
}

///
/// A second output of the same run encodes that frame into NUT (thrown
/// away): the chunks' container must be able to hold what the encoder
/// makes (`No codec tag defined` if not), or every chunk would fail.
pub fn plain_first_frame(p: &PlainRun) -> Vec<String> {
    let mut a = s(&QUIET);
    a.extend(s(&["-i", p.source]));
    for (muxer, format, dest) in [(p.muxer_args, p.format, p.dest), (&[][..], "nut", "pipe:1")] {
        a.extend(s(&["-map", "0:V:0"]));
        if let Some(f) = p.user_filter {
            a.extend(s(&["-vf", f]));
        }
        a.extend(p.codec_args.iter().cloned());
        a.extend(muxer.iter().cloned());
        a.extend(s(&["-frames:v", "1", "-an", "-sn", "-dn", "-f", format, "-y", dest]));
    }
    a
}

/// The video encoder the options name (`-c:v X`, `-vcodec X`, `-c X`).
pub fn encoder_arg(codec_args: &[String]) -> Option<String> {
    codec_args
        .windows(2)
        .rev()
        .find(|w| matches!(w[0].as_str(), "-c:v" | "-codec:v" | "-vcodec" | "-c" | "-codec"))
        .map(|w| w[1].clone())
}

/// ffprobe's names of a property's values, by libavutil's number (the
/// number is what the codec option takes: some names differ).
const RANGES: &[(&str, u8)] = &[("unknown", 0), ("tv", 1), ("pc", 2)];
const PRIMARIES: &[(&str, u8)] = &[
    ("bt709", 1),
    ("unknown", 2),
    ("bt470m", 4),
    ("bt470bg", 5),
    ("smpte170m", 6),
    ("smpte240m", 7),
    ("film", 8),
    ("bt2020", 9),
    ("smpte428", 10),
    ("smpte431", 11),
    ("smpte432", 12),
    ("ebu3213", 22),
];
const TRANSFERS: &[(&str, u8)] = &[
    ("bt709", 1),
    ("unknown", 2),
    ("bt470m", 4),
    ("bt470bg", 5),
    ("smpte170m", 6),
    ("smpte240m", 7),
    ("linear", 8),
    ("log100", 9),
    ("log316", 10),
    ("iec61966-2-4", 11),
    ("bt1361e", 12),
    ("iec61966-2-1", 13),
    ("bt2020-10", 14),
    ("bt2020-12", 15),
    ("smpte2084", 16),
    ("smpte428", 17),
    ("arib-std-b67", 18),
];
const SPACES: &[(&str, u8)] = &[
    ("gbr", 0),
    ("bt709", 1),
    ("unknown", 2),
    ("fcc", 4),
    ("bt470bg", 5),
    ("smpte170m", 6),
    ("smpte240m", 7),
    ("ycgco", 8),
    ("bt2020nc", 9),
    ("bt2020c", 10),
    ("smpte2085", 11),
    ("chroma-derived-nc", 12),
    ("chroma-derived-c", 13),
    ("ictcp", 14),
];
const CHROMA: &[(&str, u8)] = &[
    ("unspecified", 0),
    ("left", 1),
    ("center", 2),
    ("topleft", 3),
    ("top", 4),
    ("bottomleft", 5),
    ("bottom", 6),
];
const FIELDS: &[(&str, u8)] =
    &[("unknown", 0), ("progressive", 1), ("tt", 2), ("bb", 3), ("tb", 4), ("bt", 5)];

/// The properties ffmpeg decides from the input's first frame (colour tags,
/// chroma location, field order), as plain ffmpeg decided them, as codec
/// options for the output's first video stream. A value this table does not
/// know (a newer ffprobe's) is left to ffmpeg.
pub fn decided(p: &CodecParams) -> Vec<String> {
    let options = [
        ("-color_range:v:0", RANGES, &p.color_range),
        ("-colorspace:v:0", SPACES, &p.color_space),
        ("-color_primaries:v:0", PRIMARIES, &p.color_primaries),
        ("-color_trc:v:0", TRANSFERS, &p.color_transfer),
        ("-chroma_sample_location:v:0", CHROMA, &p.chroma_location),
        ("-field_order:v:0", FIELDS, &p.field_order),
    ];
    let mut a = Vec::new();
    for (option, names, value) in options {
        if let Some((_, n)) = names.iter().find(|(name, _)| name == value) {
            a.extend([option.to_string(), n.to_string()]);
        }
    }
    a
}

/// The video stream's time base as the plain run's muxer chose it (MP4's
/// timescale, AVI's frame rate), for the merge: a stream copy would take
/// the NUT chunks' (1/51200 at 25 frames/s: AVI then counts every other
/// frame as an empty one). None when the plain run's is not to be kept.
fn time_base(p: &CodecParams) -> Vec<String> {
    match Rational::parse(&p.time_base) {
        Some(tb) if tb.num > 0 && tb.den > 0 => vec!["-time_base:v:0".into(), tb.to_string()],
        _ => Vec::new(),
    }
}

/// Whether every tick of `fine` is a whole number of ticks of the time
/// base `coarse` (as ffprobe prints it), so timestamps in `fine` keep
/// their exact value in `coarse`.
pub fn holds_every_tick(coarse: &str, fine: Rational) -> bool {
    match Rational::parse(coarse) {
        Some(c) if c.num > 0 && c.den > 0 && fine.num > 0 && fine.den > 0 => {
            (fine.num as i128 * c.den as i128) % (fine.den as i128 * c.num as i128) == 0
        }
        _ => false,
    }
}

/// The filter that turns frames upright the way ffmpeg's autorotate does.
pub fn rotate_filter(rotation: i64) -> Option<String> {
    match rotation.rem_euclid(360) {
        90 => Some("transpose=cclock".into()),
        180 => Some("hflip,vflip".into()),
        270 => Some("transpose=clock".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seek_is_a_microsecond_before_the_keyframe() {
        let tb = Rational { num: 1, den: 90000 };
        assert_eq!(seek_before(295200, tb), "3.279999");
        assert_eq!(seek_before(0, tb), "-0.000001");
    }

    #[test]
    fn direct_seek_is_at_or_just_after_the_keyframe() {
        assert_eq!(seek_at(295200, Rational { num: 1, den: 90000 }), "3.280000");
        // 1001/30000 s is 33366.67 µs: rounded up, never before the keyframe.
        assert_eq!(seek_at(1001, Rational { num: 1, den: 30000 }), "0.033367");
        assert_eq!(seek_at(-1001, Rational { num: 1, den: 30000 }), "-0.033366");
    }

    #[test]
    fn split_copies_exact_packet_count() {
        let c = Chunk {
            index: 1,
            start: 50,
            end: Some(100),
            frames: 50,
            first_packet: 50,
            packets: 52,
            seek_pts: 50,
            trim_start: None,
            trim_end: None,
        };
        let first = Chunk {
            index: 0,
            start: 0,
            end: Some(50),
            frames: 50,
            first_packet: 0,
            packets: 50,
            seek_pts: 0,
            trim_start: None,
            trim_end: None,
        };
        let plan = Plan {
            time_base: Rational { num: 1, den: 25 },
            chunks: vec![first, c.clone()],
            total_frames: 100,
            frame_seconds: 0.04,
            skipped_leading: 0,
        };
        let a = split("in put.mp4", 0, &plan, &c, "pipe:1");
        let line = a.join(" ");
        assert!(line.contains("-ss 1.999999 -copyts -i in put.mp4 -map 0:0 -c copy -copypriorss 0 -frames:v 52 -output_ts_offset 10.000000"), "{line}");

        // Read in place: the same keyframe and shift, the trim does the rest.
        let spec = EncodeSpec {
            codec_args: s(&["-c:v", "mpeg4"]),
            rotate_filter: None,
            user_filter: None,
            vfr_time_base: None,
            in_band_headers: false,
            plain: None,
        };
        let video = ChunkVideo { filter: "null".into(), gop_timecode: None };
        let direct = encode(&spec, &video, Some(1), &Input::source("in put.mp4", 2, &plan, &c), "out.nut");
        let line = direct.join(" ");
        assert!(line.contains("-threads 1 -noautorotate -noaccurate_seek -seek_timestamp 1 -ss 2.000000 -itsoffset 10.000000 -copyts -i in put.mp4 -map 0:2 -vf null"), "{line}");
        let first =
            encode(&spec, &video, None, &Input::source("in put.mp4", 2, &plan, &plan.chunks[0]), "out.nut");
        assert!(!first.contains(&"-ss".to_string()), "{first:?}");
    }

    #[test]
    fn in_points_are_the_shifted_starts_rounded_up() {
        let chunk = |start| Chunk {
            index: 1,
            start,
            end: None,
            frames: 1,
            first_packet: 0,
            packets: 1,
            seek_pts: start,
            trim_start: None,
            trim_end: None,
        };
        let plan = |tb, first| Plan {
            time_base: tb,
            chunks: vec![Chunk { index: 0, ..chunk(first) }],
            total_frames: 1,
            frame_seconds: 0.04,
            skipped_leading: 0,
        };
        let p = plan(Rational { num: 1, den: 25 }, 0);
        assert_eq!(chunk_inpoint(&p, &chunk(50)), "12.000000");
        // 1001/30000 s: 33366.67 µs, rounded up (never before the frame);
        // a source starting at -1.5 s is shifted by 12 s.
        let p = plan(Rational { num: 1001, den: 30000 }, -45);
        assert_eq!(p.ts_shift(), 12.0);
        assert_eq!(chunk_inpoint(&p, &chunk(1)), "12.033367");
        assert_eq!(chunk_inpoint(&p, &chunk(-45)), "10.498500");
    }

    #[test]
    fn a_time_base_holds_every_tick_of_a_finer_one_or_not() {
        let ms = Rational { num: 1, den: 1000 };
        assert!(holds_every_tick("1/90000", ms));
        assert!(holds_every_tick("1/1000", ms));
        assert!(!holds_every_tick("1/12800", ms));
        assert!(!holds_every_tick("1/25", Rational { num: 1, den: 90000 }));
        assert!(!holds_every_tick("", ms));
    }

    #[test]
    fn chunk_filter_order() {
        let spec = EncodeSpec {
            codec_args: vec![],
            rotate_filter: rotate_filter(90),
            user_filter: Some("scale=160:-2".into()),
            vfr_time_base: None,
            in_band_headers: false,
            plain: None,
        };
        let mut c = Chunk {
            index: 1,
            start: 50,
            end: Some(100),
            frames: 50,
            first_packet: 50,
            packets: 50,
            seek_pts: 50,
            trim_start: Some(1.98),
            trim_end: Some(3.98),
        };
        assert_eq!(
            chunk_filter(&spec, &c, 10.0),
            "trim=start=11.980000:end=13.980000,transpose=cclock,scale=160:-2"
        );
        let plain = EncodeSpec { rotate_filter: None, user_filter: None, ..spec };
        c.trim_start = None;
        c.trim_end = None;
        assert_eq!(chunk_filter(&plain, &c, 10.0), "null");
    }

    fn plain(field_order: &str, color_space: &str, color_transfer: &str) -> CodecParams {
        CodecParams {
            codec: "h264".into(),
            profile: "High".into(),
            pix_fmt: "yuv420p".into(),
            width: 720,
            height: 576,
            sample_aspect_ratio: "16:15".into(),
            field_order: field_order.into(),
            level: "30".into(),
            color_range: "tv".into(),
            color_space: color_space.into(),
            color_primaries: "unknown".into(),
            color_transfer: color_transfer.into(),
            chroma_location: "left".into(),
            time_base: "1/25".into(),
        }
    }

    #[test]
    fn decided_properties_go_by_number() {
        // ffprobe's "gbr" and "bt470m" are "rgb" and "gamma22" to the codec
        // options: numbers mean the same to both.
        let a = decided(&plain("tb", "gbr", "bt470m")).join(" ");
        assert_eq!(
            a,
            "-color_range:v:0 1 -colorspace:v:0 0 -color_primaries:v:0 2 -color_trc:v:0 4 \
             -chroma_sample_location:v:0 1 -field_order:v:0 4"
        );
        // Unknown stays unknown (a chunk's first frame may say otherwise);
        // a name this ffprobe does not know is left to ffmpeg.
        let a = decided(&plain("unknown", "something-new", "unknown")).join(" ");
        assert!(a.contains("-field_order:v:0 0") && a.contains("-color_trc:v:0 2"), "{a}");
        assert!(!a.contains("-colorspace"), "{a}");
    }

    #[test]
    fn decided_properties_reach_chunks_and_merge() {
        let spec = EncodeSpec {
            codec_args: s(&["-c:v", "libx264"]),
            rotate_filter: None,
            user_filter: Some("scale=360:-2".into()),
            vfr_time_base: None,
            in_band_headers: false,
            plain: Some(plain("bt", "bt709", "bt709")),
        };
        let video = ChunkVideo { filter: "null".into(), gop_timecode: None };
        let enc = encode(&spec, &video, None, &Input::Nut("pipe:0".into()), "pipe:1").join(" ");
        assert!(enc.contains("-c:v libx264 -color_range:v:0 1 -colorspace:v:0 1"), "{enc}");
        assert!(enc.contains("-field_order:v:0 5 -an"), "{enc}");
        let merged = merge(&MergeInputs {
            concat_list: "c.txt",
            side: None,
            source: "in.ts",
            source_offset: 0.0,
            video_index: 0,
            plain: spec.plain.as_ref(),
            muxer_args: &[],
            format: "matroska",
            dest: "out.mkv",
        })
        .join(" ");
        assert!(merged.contains("-c copy -color_range:v:0 1"), "{merged}");
        assert!(merged.contains("-field_order:v:0 5 -time_base:v:0 1/25 -map_metadata"), "{merged}");
        // The plain run: the source as plain ffmpeg sees it (autorotated, the
        // user's filter), its first frame, in the output's format.
        let muxer = s(&["-movflags", "+faststart"]);
        let run = PlainRun {
            source: "in.ts",
            codec_args: &spec.codec_args,
            user_filter: spec.user_filter.as_deref(),
            muxer_args: &muxer,
            format: "mp4",
            dest: "p.mp4",
        };
        assert_eq!(
            plain_first_frame(&run)[5..].join(" "),
            "-i in.ts -map 0:V:0 -vf scale=360:-2 -c:v libx264 -movflags +faststart -frames:v 1 -an -sn -dn -f mp4 -y p.mp4 \
             -map 0:V:0 -vf scale=360:-2 -c:v libx264 -frames:v 1 -an -sn -dn -f nut -y pipe:1"
        );
    }
}
