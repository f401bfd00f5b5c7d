//! Encoders and options as chunked encoding sees them: what cannot be cut
//! into chunks (refused up front, with the reason, before any node
//! starts), and ffmpeg's `-target` presets (a format, its muxer options, a
//! frame rate).
//!
//! Tested chunked, frame-exact and with plain ffmpeg's stream properties
//! (`tests/it/transcode_encoders.rs`): libx264, libx265, libvpx (VP8),
//! libvpx-vp9, libaom-av1, libsvtav1, librav1e, mpeg4, libxvid,
//! mpeg2video, mpeg1video, prores_ks, dnxhd, mjpeg, ffv1, libtheora.

/// Encoder-private option lists (`key=value:key=value`) that may ask for
/// a second pass.
const PARAMS: &[&str] =
    &["-x264-params", "-x264opts", "-x265-params", "-svtav1-params", "-aom-params", "-rav1e-params"];

/// The option that asks for two-pass encoding, if any: `-pass`,
/// `-passlogfile`, or `pass=`/`stats=`/`passes=` (more than 1) in an
/// encoder's parameter list. The second pass needs the first pass's
/// statistics of the whole video, in one place; a chunk's encoder sees
/// only its chunk, and a node has no statistics at all.
pub fn two_pass(codec_args: &[String]) -> Option<String> {
    let base = |o: &str| o.split(':').next().unwrap_or(o).to_string();
    for w in codec_args.windows(2) {
        let (opt, value) = (base(&w[0]), &w[1]);
        if opt == "-pass" || opt == "-passlogfile" {
            return Some(format!("{} {value}", w[0]));
        }
        if PARAMS.contains(&opt.as_str()) {
            let asks = value.split([':', ',']).any(|kv| match kv.split_once('=') {
                Some(("pass" | "stats", _)) => true,
                Some(("passes", n)) => n.trim() != "1",
                _ => false,
            });
            if asks {
                return Some(format!("{} {value}", w[0]));
            }
        }
    }
    None
}

/// An ffmpeg `-target` (`pal-dvd`, `ntsc-vcd`, `dvd` ...): it picks the
/// codecs, size, bit rates and a frame rate for the encoders (which get
/// `-target` itself) and a format with its muxer options for the output
/// (which the merge, a stream copy, must be given explicitly: `-target`
/// there would pick encoders again).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub format: &'static str,
    pub muxer: &'static [&'static str],
    /// `pal`, `ntsc` or `film`; None: ffmpeg guesses it from the input's
    /// frame rate.
    pub norm: Option<&'static str>,
}

/// The `-target` named `value`, as ffmpeg 5.1 defines them (None: ffmpeg
/// will refuse it itself).
pub fn target(value: &str) -> Option<Target> {
    let (norm, kind) = match value.split_once('-') {
        Some(("pal", kind)) => (Some("pal"), kind),
        Some(("ntsc", kind)) => (Some("ntsc"), kind),
        Some(("film", kind)) => (Some("film"), kind),
        _ => (None, value),
    };
    let (format, muxer): (&'static str, &'static [&'static str]) = match kind {
        "vcd" => ("vcd", &["-packetsize", "2324", "-muxrate", "1411200", "-muxpreload", "0.44"]),
        "svcd" => ("svcd", &["-packetsize", "2324"]),
        "dvd" => ("dvd", &["-packetsize", "2048", "-muxrate", "10080000"]),
        k if k.starts_with("dv") => ("dv", &[]),
        _ => return None,
    };
    Some(Target { format, muxer, norm })
}

impl Target {
    /// The frame rate this target encodes at, for an input of `fps`
    /// frames/s (None: ffmpeg cannot tell the norm and refuses).
    pub fn rate(&self, fps: f64) -> Option<f64> {
        let near = |r: f64| (fps - r).abs() < r * 0.001;
        let norm = match self.norm {
            Some(n) => n,
            // ffmpeg's guess from the input: 25 is PAL, 29.97 and 23.976 NTSC.
            None if near(25.0) => "pal",
            None if near(30000.0 / 1001.0) || near(24000.0 / 1001.0) => "ntsc",
            None => return None,
        };
        Some(match norm {
            "pal" => 25.0,
            "ntsc" => 30000.0 / 1001.0,
            _ => 24000.0 / 1001.0,
        })
    }
}

/// Why an encode cannot be cut into chunks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unchunkable {
    #[error(
        "-target {target} encodes at {rate:.3} frames/s and the input has {input:.3}: the frame rate \
         conversion drops or repeats frames, which chunked encoding cannot do exactly (convert the \
         frame rate with ffmpeg first)"
    )]
    TargetRate { target: String, rate: f64, input: f64 },
    #[error(
        "{encoder} cannot be chunked: dffmpeg's chunks travel as NUT files, which cannot hold what it \
         makes (encode it with ffmpeg alone)"
    )]
    NotInNut { encoder: String },
}

/// The user's `-target`, if any, must keep the input's frame rate.
pub fn check_target(codec_args: &[String], input_fps: f64) -> Result<(), Unchunkable> {
    let Some(value) = codec_args.windows(2).rev().find(|w| w[0] == "-target").map(|w| &w[1]) else {
        return Ok(());
    };
    let Some(rate) = target(value).and_then(|t| t.rate(input_fps)) else { return Ok(()) };
    if (rate - input_fps).abs() >= rate * 0.001 {
        return Err(Unchunkable::TargetRate { target: value.clone(), rate, input: input_fps });
    }
    Ok(())
}

/// The `-gop_timecode` that makes an MPEG-1/2 encoder whose first frame is
/// frame `first` of the output (at `fps`, rounded, as the encoder counts)
/// number its GOPs as one encoder of the whole output would: from the
/// user's `-gop_timecode` (`hh:mm:ss:ff`, `;` or `.` before the frames
/// for drop-frame), else from zero (drop-frame with
/// `-drop_frame_timecode 1`). None: the encoder is left to refuse what it
/// cannot use.
pub fn gop_timecode(codec_args: &[String], fps: i64, first: u64) -> Option<String> {
    let last = |name: &str| {
        codec_args.windows(2).rev().find(|w| w[0].split(':').next() == Some(name)).map(|w| w[1].as_str())
    };
    let (start, drop) = match last("-gop_timecode") {
        Some(tc) => parse_timecode(tc, fps)?,
        None => (0, matches!(last("-drop_frame_timecode"), Some("1" | "true"))),
    };
    if fps <= 0 || (drop && fps % 30 != 0) {
        return None;
    }
    let mut n = start + i64::try_from(first).ok()?;
    if drop {
        // libavutil's av_timecode_adjust_ntsc_framenum2: frames to the
        // number a drop-frame timecode shows.
        let (dropped, per_10_minutes) = (fps / 30 * 2, fps / 30 * 17982);
        let (d, m) = (n / per_10_minutes, n % per_10_minutes);
        n += 9 * dropped * d + dropped * ((m - dropped) / (per_10_minutes / 10));
    }
    let (ff, s, m, h) = (n % fps, n / fps % 60, n / (fps * 60) % 60, n / (fps * 3600) % 24);
    Some(format!("{h:02}:{m:02}:{s:02}{}{ff:02}", if drop { ';' } else { ':' }))
}

/// A timecode as the encoder reads it (libavutil's
/// av_timecode_init_from_string): its frame number, and whether it is
/// drop-frame.
fn parse_timecode(tc: &str, fps: i64) -> Option<(i64, bool)> {
    let drop = tc.contains([';', '.']);
    let parts: Vec<i64> = tc.split([':', ';', '.']).map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s, f] = parts[..] else { return None };
    let mut start = (h * 3600 + m * 60 + s) * fps + f;
    if drop {
        let minutes = 60 * h + m;
        start -= fps / 30 * 2 * (minutes - minutes / 10);
    }
    Some((start, drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn two_pass_is_found_wherever_it_is_asked_for() {
        assert_eq!(two_pass(&words(&["-c:v", "libx264", "-pass", "2"])), Some("-pass 2".into()));
        assert_eq!(two_pass(&words(&["-pass:v", "1", "-b:v", "1M"])), Some("-pass:v 1".into()));
        assert!(two_pass(&words(&["-passlogfile", "/tmp/x"])).is_some());
        assert!(two_pass(&words(&["-x265-params", "log-level=error:pass=2"])).is_some());
        assert!(two_pass(&words(&["-x264-params", "stats=a.log"])).is_some());
        assert!(two_pass(&words(&["-svtav1-params", "passes=2"])).is_some());
        assert_eq!(two_pass(&words(&["-svtav1-params", "passes=1"])), None);
        assert_eq!(two_pass(&words(&["-x264-params", "keyint=50:bframes=3", "-crf", "20"])), None);
        // A value that merely looks like it is no option.
        assert_eq!(two_pass(&words(&["-metadata", "pass=2"])), None);
    }

    #[test]
    fn gop_timecodes_go_on_where_the_last_chunk_stopped() {
        let none = words(&["-c:v", "mpeg2video"]);
        assert_eq!(gop_timecode(&none, 25, 36).as_deref(), Some("00:00:01:11"));
        assert_eq!(gop_timecode(&none, 25, 25 * 3600 + 1).as_deref(), Some("01:00:00:01"));
        let from = words(&["-gop_timecode", "10:00:00:00"]);
        assert_eq!(gop_timecode(&from, 25, 50).as_deref(), Some("10:00:02:00"));
        // Drop-frame at 29.97: 00:00:59;28 + 12 frames skips ;00 and ;01
        // (as one encoder does), but not at a tenth minute.
        let df = words(&["-gop_timecode", "00:00:59;28"]);
        assert_eq!(gop_timecode(&df, 30, 12).as_deref(), Some("00:01:00;12"));
        let df = words(&["-gop_timecode", "00:09:59;29"]);
        assert_eq!(gop_timecode(&df, 30, 1).as_deref(), Some("00:10:00;00"));
        let df = words(&["-drop_frame_timecode", "1"]);
        assert_eq!(gop_timecode(&df, 30, 1800).as_deref(), Some("00:01:00;02"));
        // What the encoder would refuse is left to it.
        assert_eq!(gop_timecode(&words(&["-gop_timecode", "bad"]), 25, 12), None);
        assert_eq!(gop_timecode(&words(&["-drop_frame_timecode", "1"]), 25, 12), None);
    }

    #[test]
    fn targets_name_their_format_and_rate() {
        let dvd = target("pal-dvd").unwrap();
        assert_eq!((dvd.format, dvd.norm), ("dvd", Some("pal")));
        assert_eq!(dvd.muxer, ["-packetsize", "2048", "-muxrate", "10080000"]);
        assert_eq!(target("ntsc-vcd").unwrap().format, "vcd");
        assert_eq!(target("film-dv50").unwrap().format, "dv");
        assert_eq!(target("dvd").unwrap().norm, None);
        assert_eq!(target("pal-bluray"), None);
        assert_eq!(dvd.rate(29.97), Some(25.0));
        let guessed = target("dvd").unwrap();
        assert_eq!(guessed.rate(25.0), Some(25.0));
        assert!((guessed.rate(23.976).unwrap() - 29.97).abs() < 0.01);
        assert_eq!(guessed.rate(50.0), None);
    }

    #[test]
    fn a_target_that_changes_the_frame_rate_is_refused() {
        assert_eq!(check_target(&words(&["-target", "pal-dvd"]), 25.0), Ok(()));
        assert_eq!(check_target(&words(&["-target", "ntsc-dvd"]), 30000.0 / 1001.0), Ok(()));
        assert_eq!(check_target(&words(&["-target", "dvd"]), 25.0), Ok(()));
        let e = check_target(&words(&["-target", "pal-dvd"]), 30000.0 / 1001.0).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("-target pal-dvd encodes at 25.000 frames/s and the input has 29.970"));
        assert!(check_target(&words(&["-target", "dvd"]), 24000.0 / 1001.0).is_err());
        // ffmpeg refuses what it cannot guess: left to it.
        assert_eq!(check_target(&words(&["-target", "dvd"]), 50.0), Ok(()));
        assert_eq!(check_target(&words(&["-c:v", "mpeg2video"]), 50.0), Ok(()));
    }
}
