//! The user's ffmpeg output options, sorted by where they apply.
//!
//! `dffmpeg transcode in.mp4 -c:v libx264 -crf 23 -c:a aac` hands every
//! trailing option to ffmpeg, as the original tool did. The chunk encodes
//! (video only) and the side encode (audio, subtitles: once, from the source)
//! both receive the codec options — ffmpeg applies each to the streams its
//! specifier selects and ignores the rest. Options about the output file
//! itself (`-f`, `-movflags`, `-metadata`) go to the final merge only.
//! Options that change the number or timing of frames cannot be honoured
//! chunk by chunk and are refused with a clear message.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArgsError {
    #[error("{0} is not supported: dffmpeg keeps every frame of the whole input and every stream (cut the input with ffmpeg first)")]
    Timing(String),
    #[error("{0} is not supported: dffmpeg maps the streams itself (it keeps every video, audio and subtitle stream)")]
    Mapping(String),
    #[error("the video filter {0:?} changes the number or timing of frames, which chunked encoding cannot do exactly")]
    FrameFilter(String),
    #[error("video stream copy needs no cluster: use ffmpeg -c copy directly")]
    VideoCopy,
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("{0}: two-pass encoding needs a first pass over the whole video, and dffmpeg encodes each chunk on its own (use a constant-quality mode such as -crf or -q:v, or encode two-pass with ffmpeg)")]
    TwoPass(String),
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserArgs {
    /// Options for the encoders (chunk and side encodes).
    pub codec: Vec<String>,
    /// The user's video filter chain, if any (run after dffmpeg's own trim).
    pub video_filter: Option<String>,
    /// Options for the final output file only.
    pub muxer: Vec<String>,
    /// `-f FORMAT`, if given.
    pub format: Option<String>,
    /// `-y` among the ffmpeg options.
    pub overwrite: bool,
    /// Whether the user set `-threads`.
    pub threads: bool,
    /// The video encoder asked for (`-c:v`, `-vcodec`, `-c`), if any.
    pub video_codec: Option<String>,
}

/// Options refused because they cut, retime or drop frames.
const TIMING: &[&str] = &[
    "-ss",
    "-sseof",
    "-t",
    "-to",
    "-frames",
    "-vframes",
    "-r",
    "-fpsmax",
    "-fps_mode",
    "-vsync",
    "-itsoffset",
    "-shortest",
    "-vn",
    "-copyts",
    "-start_at_zero",
];
/// Filters refused inside a video filter chain.
const FRAME_FILTERS: &[&str] = &[
    "fps",
    "framerate",
    "select",
    "trim",
    "setpts",
    "tinterlace",
    "minterpolate",
    "decimate",
    "mpdecimate",
    "framestep",
    "tpad",
    "loop",
    "reverse",
    "interlace",
    "telecine",
    "fieldmatch",
    "random",
    "shuffleframes",
    "framepack",
    "bwdif",
    "yadif",
    "w3fdif",
    "estdif",
];
/// Output-file options that go to the merge only (besides `-metadata*`).
const MUXER: &[&str] = &["-movflags", "-brand", "-write_tmcd", "-use_editlist", "-fflags"];

fn base(opt: &str) -> &str {
    opt.split(':').next().unwrap_or(opt)
}

fn is_video_spec(opt: &str) -> bool {
    let spec: Vec<&str> = opt.split(':').skip(1).collect();
    spec.first() == Some(&"v") || spec.first() == Some(&"V")
}

pub fn parse(raw: &[String]) -> Result<UserArgs, ArgsError> {
    let mut args = raw.iter().peekable();
    if args.peek().map(|a| a.as_str()) == Some("--") {
        args.next();
    }
    let mut out = UserArgs::default();
    while let Some(arg) = args.next() {
        let opt = arg.as_str();
        let value = |args: &mut std::iter::Peekable<std::slice::Iter<String>>| {
            args.next().cloned().ok_or_else(|| ArgsError::MissingValue(opt.to_string()))
        };
        match base(opt) {
            "-y" => out.overwrite = true,
            "-n" | "-nostdin" | "-hide_banner" => {}
            o if TIMING.contains(&o) => return Err(ArgsError::Timing(opt.to_string())),
            "-filter_complex" | "-lavfi" | "-filter_complex_script" => {
                return Err(ArgsError::Mapping(opt.to_string()))
            }
            "-map" => {
                let v = value(&mut args)?;
                if v != "0" {
                    return Err(ArgsError::Mapping(format!("-map {v}")));
                }
            }
            "-vf" | "-filter" if opt == "-vf" || is_video_spec(opt) => {
                let v = value(&mut args)?;
                check_filter(&v)?;
                out.video_filter = Some(v);
            }
            "-f" => {
                let v = value(&mut args)?;
                out.muxer.extend([opt.to_string(), v.clone()]);
                out.format = Some(v);
            }
            "-target" => {
                // Both the encoders' preset and the output's format.
                let v = value(&mut args)?;
                if let Some(t) = crate::transcode::encoders::target(&v) {
                    out.muxer.extend(t.muxer.iter().map(|m| m.to_string()));
                    out.format.get_or_insert_with(|| t.format.to_string());
                }
                out.codec.extend([opt.to_string(), v]);
            }
            "-metadata" => {
                let v = value(&mut args)?;
                out.muxer.extend([opt.to_string(), v]);
            }
            o if MUXER.contains(&o) => {
                let v = value(&mut args)?;
                out.muxer.extend([opt.to_string(), v]);
            }
            "-c" | "-codec" | "-vcodec" => {
                let v = value(&mut args)?;
                let for_video = opt == "-vcodec" || opt.split(':').nth(1).is_none() || is_video_spec(opt);
                if for_video {
                    if v == "copy" {
                        return Err(ArgsError::VideoCopy);
                    }
                    out.video_codec = Some(v.clone());
                }
                out.codec.extend([opt.to_string(), v]);
            }
            o => {
                if o == "-threads" {
                    out.threads = true;
                }
                out.codec.push(opt.to_string());
                // An option's value is the next word unless that is itself an
                // option; negative numbers are values.
                if opt.starts_with('-') {
                    if let Some(next) = args.peek() {
                        if !next.starts_with('-') || next.parse::<f64>().is_ok() {
                            out.codec.push(value(&mut args)?);
                        }
                    }
                }
            }
        }
    }
    if let Some(opt) = crate::transcode::encoders::two_pass(&out.codec) {
        return Err(ArgsError::TwoPass(opt));
    }
    Ok(out)
}

fn check_filter(chain: &str) -> Result<(), ArgsError> {
    for filter in chain.split([',', ';']) {
        // Drop leading pad labels like `[in]`, then take the name before its
        // options (`=`), instance name (`@`) or output labels.
        let mut rest = filter.trim();
        while let Some(after) = rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
            rest = after.1.trim_start();
        }
        let name = rest.split(['=', '@', '[']).next().unwrap_or("").trim();
        if FRAME_FILTERS.contains(&name) {
            return Err(ArgsError::FrameFilter(chain.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&str]) -> Result<UserArgs, ArgsError> {
        parse(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_original_tools_habit() {
        let a = p(&["-c:v", "mpeg4", "-b:v", "1M"]).unwrap();
        assert_eq!(a.codec, ["-c:v", "mpeg4", "-b:v", "1M"]);
        assert_eq!(a.video_codec.as_deref(), Some("mpeg4"));
        assert!(a.muxer.is_empty());
    }

    #[test]
    fn double_dash_and_overwrite() {
        let a = p(&["--", "-c:v", "libx264", "-crf", "23", "-y"]).unwrap();
        assert_eq!(a.codec, ["-c:v", "libx264", "-crf", "23"]);
        assert!(a.overwrite);
    }

    #[test]
    fn filters_and_muxer_options_are_sorted_out() {
        let a = p(&[
            "-vf",
            "scale=640:-2",
            "-movflags",
            "+faststart",
            "-metadata",
            "title=x",
            "-f",
            "mp4",
            "-c:a",
            "aac",
            "-ac",
            "2",
            "-af",
            "volume=-3dB",
        ])
        .unwrap();
        assert_eq!(a.video_filter.as_deref(), Some("scale=640:-2"));
        assert_eq!(a.muxer, ["-movflags", "+faststart", "-metadata", "title=x", "-f", "mp4"]);
        assert_eq!(a.format.as_deref(), Some("mp4"));
        assert_eq!(a.codec, ["-c:a", "aac", "-ac", "2", "-af", "volume=-3dB"]);
        assert_eq!(a.video_codec, None);
    }

    #[test]
    fn negative_values_stay_values() {
        let a = p(&["-crf", "23", "-qmin", "-1", "-an"]).unwrap();
        assert_eq!(a.codec, ["-crf", "23", "-qmin", "-1", "-an"]);
    }

    #[test]
    fn frame_changing_options_are_refused() {
        assert_eq!(p(&["-r", "30"]), Err(ArgsError::Timing("-r".into())));
        assert_eq!(p(&["-t", "5"]), Err(ArgsError::Timing("-t".into())));
        assert_eq!(p(&["-frames:v", "5"]), Err(ArgsError::Timing("-frames:v".into())));
        assert!(matches!(p(&["-vf", "scale=2:2,fps=30"]), Err(ArgsError::FrameFilter(_))));
        assert!(matches!(p(&["-filter:v", "[in]yadif=1[out]"]), Err(ArgsError::FrameFilter(_))));
        assert!(matches!(p(&["-map", "0:v"]), Err(ArgsError::Mapping(_))));
        assert!(p(&["-map", "0"]).is_ok());
        assert_eq!(p(&["-c", "copy"]), Err(ArgsError::VideoCopy));
        assert!(p(&["-c:a", "copy"]).is_ok());
        assert_eq!(p(&["-vf"]), Err(ArgsError::MissingValue("-vf".into())));
        assert_eq!(p(&["-c:v", "libx264", "-pass", "1"]), Err(ArgsError::TwoPass("-pass 1".into())));
    }

    #[test]
    fn a_target_sets_the_format_and_its_muxer_options() {
        let a = p(&["-target", "pal-dvd", "-flags", "+ilme+ildct"]).unwrap();
        assert_eq!(a.codec, ["-target", "pal-dvd", "-flags", "+ilme+ildct"]);
        assert_eq!(a.format.as_deref(), Some("dvd"));
        assert_eq!(a.muxer, ["-packetsize", "2048", "-muxrate", "10080000"]);
        // An explicit -f wins.
        let a = p(&["-target", "ntsc-svcd", "-f", "mpeg"]).unwrap();
        assert_eq!(a.format.as_deref(), Some("mpeg"));
    }
}
