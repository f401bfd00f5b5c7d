//! Every software video encoder of Debian 12's ffmpeg that a user could
//! reasonably pick, each in its usual container(s), chunked on the
//! embedded local cluster (no inventory: the chunks read the source in
//! place) and compared with one plain ffmpeg run of the same arguments:
//! every frame of the input at its time, the streams and the audio in
//! place, the quality of the plain run, and the output's video stream as
//! ffprobe reads it equal to the plain run's. And the encodes that cannot
//! be chunked are refused up front (exit 2), with the reason.
//!
//! The clip is short and small (2 s, 320x240, a keyframe every 12 frames,
//! 0.5 s chunks: 4 of them) and the encoders at their fastest settings,
//! so that the whole matrix stays quick on two cores.

use std::path::{Path, PathBuf};

use crate::common::media::*;
use crate::common::run::*;

/// Compared besides [`VIDEO_PROPERTIES`]: what the container and the
/// encoder make of the stream.
const MORE_PROPERTIES: [&str; 6] =
    ["codec_name", "time_base", "display_aspect_ratio", "r_frame_rate", "avg_frame_rate", "has_b_frames"];

/// A progressive 320x240 H.264 clip with AAC at 48 kHz in MP4 (an edit
/// list for the audio's priming), a keyframe every 12 frames.
fn source(dir: &Path) -> PathBuf {
    let p = dir.join("in.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25:duration=2",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000:duration=2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "12",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        p.to_str().unwrap(),
    ]);
    p
}

/// Transcode `src` into `out` (its extension names the format) with
/// `args`, chunked, and with plain ffmpeg; compare.
fn check(src: &Path, out: &str, args: &[&str]) {
    check_within(src, out, args, 0.3);
}

/// [`check`], the PSNR allowed `db` below plain ffmpeg's.
fn check_within(src: &Path, out: &str, args: &[&str], db: f64) {
    let dir = src.parent().unwrap();
    let plain = dir.join(format!("plain.{out}"));
    let mut plain_args = vec!["-i", src.to_str().unwrap()];
    plain_args.extend(args);
    plain_args.push(plain.to_str().unwrap());
    ffmpeg(&plain_args);
    let ours = dir.join(out);
    transcode(src, &ours, args);
    let what = format!("{out} {}", args.join(" "));
    // Every frame of the input ...
    let ((frames, a), (got, b), (theirs, c)) =
        (decoded_frames(src), decoded_frames(&ours), decoded_frames(&plain));
    assert_eq!(got, frames, "{what}: frames");
    assert_eq!(theirs, frames, "{what}: plain ffmpeg's frames");
    // ... at the input's times (relative to the first: the container may
    // start elsewhere). AVI stores no presentation times: a decoder finds
    // none for the last B-frame, as in the plain run's.
    let untimed = frames as usize - c.len();
    assert!(b.len() + untimed >= a.len(), "{what}: {} frames without a time", a.len() - b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let (x, y) = (x - a[0], y - b[0]);
        assert!((x - y).abs() <= 0.0015, "{what}: frame {i} at {y:.4} s, the input's at {x:.4} s");
    }
    // The input's streams, the audio's length and place.
    check_streams_and_audio(src, (&plain, c[0]), (&ours, b[0]), a[1] - a[0]);
    // The quality of one plain run.
    let (theirs, got) = (psnr_scaled(&plain, src), psnr_scaled(&ours, src));
    assert!(got >= theirs - db, "{what}: PSNR {got:.2} dB, plain ffmpeg's {theirs:.2} dB");
    // MPEG-1/2: each GOP's timecode counts the frames before it, as one
    // encoder of the whole would (a chunk's encoder starts at 0). The
    // decoder hands it out with a frame up to 2 before the GOP's first.
    if args.iter().any(|a| matches!(*a, "mpeg1video" | "mpeg2video" | "-target")) {
        // hh:mm:ss:ff at 25 frames/s.
        let frame = |tc: &str| {
            let v: Vec<usize> = tc.split(':').map(|n| n.parse().unwrap()).collect();
            (v[0] * 3600 + v[1] * 60 + v[2]) * 25 + v[3]
        };
        for (name, file) in [("plain ffmpeg", &plain), ("dffmpeg", &ours)] {
            let tcs = gop_timecodes(file);
            assert!(tcs.len() >= 4, "{what}: {name}'s GOP timecodes: {tcs:?}");
            for (i, tc) in &tcs {
                let n = frame(tc);
                assert!((*i..=i + 2).contains(&n), "{what}: {name}'s GOP timecodes {tcs:?}");
            }
        }
    }
    // The video stream's properties.
    let keys: Vec<&'static str> = VIDEO_PROPERTIES.iter().chain(&MORE_PROPERTIES).copied().collect();
    let (want, have) = (props_of(&plain, &keys), props_of(&ours, &keys));
    let diff: Vec<String> = want
        .iter()
        .zip(&have)
        .filter(|(w, h)| w != h)
        .map(|((k, w), (_, h))| format!("{k}: {h}, plain ffmpeg's {w}"))
        .collect();
    assert!(diff.is_empty(), "{what}: the video stream differs from plain ffmpeg's: {}", diff.join("; "));
}

/// `ours` has the streams of `src` (a DVD's muxer adds a data stream of
/// its own), its audio as long as the input's, and as far from the video
/// as in the plain run's (`frame` seconds either way: a container may
/// shift either by an audio encoder's priming). Each output comes with
/// the time its first frame is shown.
fn check_streams_and_audio(src: &Path, plain: (&Path, f64), ours: (&Path, f64), frame: f64) {
    let ((plain, plain_first), (ours, our_first)) = (plain, ours);
    let media = |p: &Path| summary(p).streams.into_iter().filter(|k| k != "data").collect::<Vec<_>>();
    let streams = media(src);
    assert_eq!(media(ours), streams, "{}: streams", ours.display());
    if !streams.iter().any(|s| s == "audio") {
        return;
    }
    let length = |p: &Path| {
        let (start, end) = span(p, "a:0");
        end - start
    };
    let (want, got) = (length(src), length(ours));
    assert!((got - want).abs() <= 0.05, "{}: audio {got:.4} s long, the input's {want:.4} s", ours.display());
    // From where the first frame is shown (AVI stores no presentation
    // times of B-frames: the decoded frames say).
    let (want, got) = (span(plain, "a:0").0 - plain_first, span(ours, "a:0").0 - our_first);
    assert!(
        (got - want).abs() <= frame + 1e-6,
        "{}: audio {got:.4} s from the video, plain ffmpeg's {want:.4} s",
        ours.display()
    );
}

/// `dffmpeg transcode` on the embedded local cluster, in 0.5 s chunks: it
/// must succeed in several of them.
fn transcode(src: &Path, out: &Path, args: &[&str]) {
    let mut cmd = dffmpeg();
    cmd.env_remove("DFFMPEG_INVENTORY").args(["transcode", "--json", "--chunk", "0.5", "-o"]);
    cmd.arg(out).arg(src).arg("--").args(args);
    let ev = ok_events(run(&mut cmd));
    assert!(count_events(&ev, "chunk_done") >= 3, "expected several chunks: {ev:?}");
}

/// Every `(output, args)` of one encoder, on one source.
fn matrix(name: &str, cases: &[(&str, &[&str])]) {
    let dir = workdir(name);
    let src = source(&dir);
    for (out, args) in cases {
        check(&src, out, args);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn libx264_in_mp4_mkv_ts() {
    let x264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-c:a", "aac"];
    matrix("x264", &[("out.mp4", &x264), ("out.mkv", &x264), ("out.ts", &x264)]);
}

#[test]
fn libx265_in_mp4_mkv() {
    let x265 = ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-c:a", "aac"];
    matrix("x265", &[("out.mp4", &x265), ("out.mkv", &x265)]);
}

#[test]
fn libvpx_vp8_in_webm() {
    // Constrained quality (a bit rate alone would make each chunk's rate
    // control start afresh, as in any chunked encode: not what is compared).
    let vp8 = [
        "-c:v",
        "libvpx",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-crf",
        "20",
        "-b:v",
        "2M",
        "-c:a",
        "libopus",
    ];
    matrix("vp8", &[("out.webm", &vp8)]);
}

#[test]
fn libvpx_vp9_in_webm_mkv() {
    let vp9 = [
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-crf",
        "40",
        "-b:v",
        "0",
        "-c:a",
        "libopus",
    ];
    matrix("vp9", &[("out.webm", &vp9), ("out.mkv", &vp9)]);
}

#[test]
fn libaom_av1_in_mkv_mp4() {
    let aom = ["-c:v", "libaom-av1", "-usage", "realtime", "-cpu-used", "8", "-crf", "40"];
    matrix("aom", &[("out.mkv", &[&aom[..], &["-c:a", "libopus"]].concat()), ("out.mp4", &aom)]);
}

#[test]
fn libsvtav1_in_mkv_mp4() {
    let svt = ["-c:v", "libsvtav1", "-preset", "12", "-crf", "40"];
    matrix("svtav1", &[("out.mkv", &svt), ("out.mp4", &svt)]);
}

#[test]
fn librav1e_in_mkv() {
    matrix("rav1e", &[("out.mkv", &["-c:v", "librav1e", "-speed", "10", "-qp", "120"])]);
}

#[test]
fn mpeg4_and_xvid_in_mp4_avi() {
    matrix(
        "mpeg4",
        &[
            ("out.mp4", &["-c:v", "mpeg4", "-q:v", "4", "-bf", "2", "-c:a", "aac"]),
            ("out.avi", &["-c:v", "mpeg4", "-q:v", "4", "-bf", "2", "-c:a", "pcm_s16le"]),
            ("xvid.avi", &["-c:v", "libxvid", "-q:v", "4", "-c:a", "libmp3lame"]),
        ],
    );
}

/// MPEG-2 in a transport stream, a program stream, a DVD's VOB and
/// Matroska; with B-frames (one frame of reorder delay: NUT then leaves
/// the chunks' start time unknown), with an aspect ratio and colour tags.
#[test]
fn mpeg2video_in_ts_mpg_vob_mkv() {
    let mpeg2 = ["-c:v", "mpeg2video", "-q:v", "4", "-c:a", "mp2"];
    let b_frames = [&mpeg2[..], &["-bf", "2"]].concat();
    let tagged = [
        &b_frames[..],
        &["-aspect", "16:9", "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709"],
    ]
    .concat();
    matrix(
        "mpeg2",
        &[
            ("out.ts", &mpeg2),
            ("out.mpg", &b_frames),
            ("dvd.vob", &["-target", "pal-dvd"]),
            ("out.mkv", &b_frames),
            ("tagged.ts", &tagged),
        ],
    );
}

/// Interlaced video (720x576, top field first, anamorphic) encoded
/// interlaced into MPEG-2: into a transport stream, and for a PAL DVD.
/// (The input is H.264: an MPEG-2 input made with the same settings would
/// come out of one plain run nearly untouched — the same frame types and
/// quantisers a second time — which chunks, whose encoders start afresh,
/// cannot match to 0.3 dB.)
#[test]
fn mpeg2video_interlaced() {
    let dir = workdir("mpeg2i");
    let src = dir.join("in.ts");
    clip_of(
        "testsrc2=size=720x576:rate=25",
        &src,
        2,
        true,
        &[
            "-vf",
            "setfield=tff,setsar=64/45",
            "-flags",
            "+ilme+ildct",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "12",
            "-c:a",
            "mp2",
        ],
    );
    let ilme = ["-flags", "+ilme+ildct"];
    check(
        &src,
        "out.ts",
        &[&ilme[..], &["-c:v", "mpeg2video", "-q:v", "4", "-bf", "2", "-c:a", "mp2"]].concat(),
    );
    // A DVD's bit rate: each chunk's rate control starts afresh, which
    // costs some quality in chunks of 12 frames (dffmpeg's are 3 s or
    // more unless --chunk says otherwise).
    check_within(&src, "dvd.mpg", &[&["-target", "pal-dvd"][..], &ilme].concat(), 1.5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mpeg1video_in_mpg() {
    matrix(
        "mpeg1",
        &[
            ("out.mpg", &["-c:v", "mpeg1video", "-q:v", "4", "-bf", "2", "-c:a", "mp2"]),
            ("vcd.mpg", &["-target", "pal-vcd"]),
        ],
    );
}

#[test]
fn prores_dnxhd_in_mov_mxf() {
    let dnxhr = ["-c:v", "dnxhd", "-profile:v", "dnxhr_lb", "-c:a", "pcm_s16le"];
    matrix(
        "intra",
        &[
            ("prores.mov", &["-c:v", "prores_ks", "-profile:v", "0", "-c:a", "pcm_s16le"]),
            ("dnxhr.mov", &dnxhr),
            ("dnxhr.mxf", &dnxhr),
        ],
    );
}

#[test]
fn mjpeg_in_avi_mov() {
    let mjpeg = ["-c:v", "mjpeg", "-q:v", "3", "-c:a", "pcm_s16le"];
    matrix("mjpeg", &[("out.avi", &mjpeg), ("out.mov", &mjpeg)]);
}

#[test]
fn ffv1_and_theora_in_mkv_ogv() {
    matrix(
        "lossless",
        &[
            ("ffv1.mkv", &["-c:v", "ffv1", "-level", "3", "-g", "12", "-c:a", "flac"]),
            ("theora.ogv", &["-c:v", "libtheora", "-q:v", "5", "-c:a", "libvorbis"]),
        ],
    );
}

/// What cannot be chunked is refused before any chunk starts, exit 2,
/// with the reason; no output is written.
#[test]
fn unchunkable_encodes_are_refused_up_front() {
    let dir = workdir("refused");
    let src = source(&dir);
    let ntsc = dir.join("ntsc.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=30000/1001:duration=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        ntsc.to_str().unwrap(),
    ]);
    let cases: [(&Path, &str, &[&str], &str); 3] = [
        (&src, "x.mp4", &["-c:v", "libx264", "-pass", "2"], "-pass 2: two-pass encoding needs a first pass"),
        (
            &ntsc,
            "x.mpg",
            &["-target", "pal-dvd"],
            "-target pal-dvd encodes at 25.000 frames/s and the input has 29.970",
        ),
        (
            &src,
            "x.webp",
            &["-c:v", "libwebp_anim", "-f", "webp"],
            "libwebp_anim cannot be chunked: dffmpeg's chunks travel as NUT files",
        ),
    ];
    for (input, out, args, why) in cases {
        let out = dir.join(out);
        let mut cmd = dffmpeg();
        cmd.env_remove("DFFMPEG_INVENTORY").args(["transcode", "--json", "-o"]).arg(&out).arg(input);
        let res = run(cmd.arg("--").args(args));
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
        assert_eq!(count_events(&events(&res), "chunk_start"), 0, "{args:?}");
        assert!(!out.exists(), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
