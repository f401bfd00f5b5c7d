//! Test media: generated with ffmpeg's lavfi sources, measured with ffprobe.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn ffprobe_json(args: &[&str], path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(out.status.success(), "ffprobe {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

fn num(v: &serde_json::Value) -> Option<f64> {
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_f64())
}

/// Presentation timestamps (seconds) of a stream's packets, sorted.
pub fn packet_times(path: &Path, stream: &str) -> Vec<f64> {
    let v = ffprobe_json(&["-select_streams", stream, "-show_entries", "packet=pts_time"], path);
    let mut t: Vec<f64> = v["packets"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| num(&p["pts_time"])).collect())
        .unwrap_or_default();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t
}

/// The first video stream's decoded frames: how many, and the
/// presentation times (seconds) of those that have one, sorted: what a
/// player shows, whatever the container stores (AVI has no presentation
/// times: a decoder finds none for a last B-frame).
pub fn decoded_frames(path: &Path) -> (u64, Vec<f64>) {
    let v =
        ffprobe_json(&["-select_streams", "v:0", "-show_entries", "frame=best_effort_timestamp_time"], path);
    let frames = v["frames"].as_array().cloned().unwrap_or_default();
    let mut t: Vec<f64> = frames.iter().filter_map(|f| num(&f["best_effort_timestamp_time"])).collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (frames.len() as u64, t)
}

/// The GOP timecodes of an MPEG-1/2 video stream, by the number of the
/// frame (in display order) that carries each.
pub fn gop_timecodes(path: &Path) -> Vec<(usize, String)> {
    let v = ffprobe_json(&["-select_streams", "v:0", "-show_entries", "frame_tags=timecode"], path);
    let frames = v["frames"].as_array().cloned().unwrap_or_default();
    let tc = |f: &serde_json::Value| f["tags"]["timecode"].as_str().map(str::to_string);
    frames.iter().enumerate().filter_map(|(i, f)| tc(f).map(|t| (i, t))).collect()
}

/// Two videos have the same frames: as many, with the same packet times
/// relative to the first (within a millisecond and a half).
pub fn assert_same_video(a: &Path, b: &Path) {
    assert_eq!(frame_count(a), frame_count(b), "frame count");
    let (ta, tb) = (packet_times(a, "v:0"), packet_times(b, "v:0"));
    assert_eq!(ta.len(), tb.len());
    for (x, y) in ta.iter().zip(&tb) {
        assert!(((x - ta[0]) - (y - tb[0])).abs() < 0.0015, "timestamps differ: {x} vs {y}");
    }
}

/// Decoded video frame count.
pub fn frame_count(path: &Path) -> u64 {
    let v = ffprobe_json(
        &["-select_streams", "v:0", "-count_frames", "-show_entries", "stream=nb_read_frames"],
        path,
    );
    num(&v["streams"][0]["nb_read_frames"]).expect("frame count") as u64
}

pub struct Summary {
    pub streams: Vec<String>,
    pub chapters: usize,
    pub title: Option<String>,
}

pub fn summary(path: &Path) -> Summary {
    let v = ffprobe_json(&["-show_streams", "-show_chapters", "-show_format"], path);
    Summary {
        streams: v["streams"]
            .as_array()
            .map(|a| a.iter().map(|s| s["codec_type"].as_str().unwrap_or("").to_string()).collect())
            .unwrap_or_default(),
        chapters: v["chapters"].as_array().map(|a| a.len()).unwrap_or(0),
        title: v["format"]["tags"]["title"].as_str().map(str::to_string),
    }
}

/// (start, end) of a stream's packets in seconds: first pts, last pts + duration.
pub fn span(path: &Path, stream: &str) -> (f64, f64) {
    let v =
        ffprobe_json(&["-select_streams", stream, "-show_entries", "packet=pts_time,duration_time"], path);
    let packets = v["packets"].as_array().cloned().unwrap_or_default();
    let mut start = f64::MAX;
    let mut end = f64::MIN;
    for p in &packets {
        if let Some(t) = num(&p["pts_time"]) {
            start = start.min(t);
            end = end.max(t + num(&p["duration_time"]).unwrap_or(0.0));
        }
    }
    assert!(!packets.is_empty(), "{} has no packets in {stream}", path.display());
    (start, end)
}

/// What a video stream carries besides its frames, as ffprobe names it.
pub const VIDEO_PROPERTIES: [&str; 10] = [
    "pix_fmt",
    "color_range",
    "color_space",
    "color_primaries",
    "color_transfer",
    "chroma_location",
    "field_order",
    "sample_aspect_ratio",
    "profile",
    "level",
];

/// The first video stream's [`VIDEO_PROPERTIES`] (`-` where ffprobe names
/// none).
pub fn video_props(path: &Path) -> Vec<(&'static str, String)> {
    props_of(path, &VIDEO_PROPERTIES)
}

/// The first video stream's `keys`, as ffprobe names them (`-` where it
/// names none).
pub fn props_of(path: &Path, keys: &[&'static str]) -> Vec<(&'static str, String)> {
    let v = ffprobe_json(&["-select_streams", "v:0", "-show_streams"], path);
    let s = &v["streams"][0];
    keys.iter()
        .map(|&k| {
            let value = match &s[k] {
                serde_json::Value::String(x) => x.clone(),
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            };
            (k, value)
        })
        .collect()
}

/// A table of several files' [`video_props`], one column per file.
pub fn props_table(columns: &[(&str, &[(&'static str, String)])]) -> String {
    let mut t = String::from("| property |");
    for (name, _) in columns {
        t.push_str(&format!(" {name} |"));
    }
    t.push_str(&format!("\n|---|{}\n", "---|".repeat(columns.len())));
    for (i, key) in VIDEO_PROPERTIES.iter().enumerate() {
        t.push_str(&format!("| {key} |"));
        for (_, props) in columns {
            t.push_str(&format!(" {} |", props[i].1));
        }
        t.push('\n');
    }
    t
}

/// Average PSNR (dB) of `a` against `b`.
pub fn psnr(a: &Path, b: &Path) -> f64 {
    psnr_with("[0:v][1:v]psnr", a, b)
}

/// [`psnr`] of `a` scaled to `b`'s size (an output of another size than
/// its input, as `-target` makes).
pub fn psnr_scaled(a: &Path, b: &Path) -> f64 {
    psnr_with("[0:v][1:v]scale2ref[a][b];[a][b]psnr", a, b)
}

fn psnr_with(graph: &str, a: &Path, b: &Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-i"])
        .arg(a)
        .arg("-i")
        .arg(b)
        .args(["-lavfi", graph, "-f", "null", "-"])
        .output()
        .expect("ffmpeg psnr");
    let err = String::from_utf8_lossy(&out.stderr);
    let avg = err
        .lines()
        .rev()
        .filter_map(|l| l.split("average:").nth(1))
        .find_map(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no psnr in {err}"));
    if avg == "inf" {
        return 100.0;
    }
    avg.parse().expect("psnr number")
}

/// A fresh directory for one test's files (outside /tmp: test hosts have
/// their own /tmp).
pub fn workdir(name: &str) -> PathBuf {
    let d = PathBuf::from(format!("/var/tmp/dffmpeg-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("workdir");
    d
}

/// A generated clip: testsrc2 320x240 at 25 fps for `seconds`, plus a sine
/// audio track when `audio`, encoded with `args` into `path`.
pub fn clip(path: &Path, seconds: u32, audio: bool, args: &[&str]) {
    clip_of("testsrc2=size=320x240:rate=25", path, seconds, audio, args);
}

/// [`clip`] of another lavfi video source (`testsrc2=size=720x576:rate=25`).
pub fn clip_of(source: &str, path: &Path, seconds: u32, audio: bool, args: &[&str]) {
    let video = format!("{source}:duration={seconds}");
    let sine = format!("sine=frequency=440:duration={seconds}");
    let mut a = vec!["-f", "lavfi", "-i", video.as_str()];
    if audio {
        a.extend(["-f", "lavfi", "-i", sine.as_str(), "-shortest"]);
    }
    a.extend(args);
    a.push(path.to_str().expect("UTF-8 test path"));
    ffmpeg(&a);
}

/// An interlaced MPEG-2 transport stream as broadcast: 720x576 at 25
/// frames/s, `field` (`tff`, `bff`) first, sample aspect ratio `sar`, MP2
/// audio, 12-frame open GOPs.
pub fn interlaced_ts(path: &Path, seconds: u32, field: &str, sar: &str) {
    let top = if field == "tff" { "1" } else { "0" };
    let filter = format!("setfield={field},setsar={sar}");
    clip_of(
        "testsrc2=size=720x576:rate=25",
        path,
        seconds,
        true,
        &[
            "-vf",
            &filter,
            "-flags",
            "+ilme+ildct",
            "-top",
            top,
            "-c:v",
            "mpeg2video",
            "-q:v",
            "4",
            "-g",
            "12",
            "-bf",
            "2",
            "-c:a",
            "mp2",
        ],
    );
}

/// A quick h264 + AAC clip `dir/name`, a keyframe every second.
pub fn sample(dir: &Path, name: &str, seconds: u32) -> PathBuf {
    let p = dir.join(name);
    clip(&p, seconds, true, &["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac"]);
    p
}
