//! Fidelity of `dffmpeg transcode` on the embedded local cluster, on
//! generated inputs of every awkward kind: the output must hold exactly the
//! input's frames at the input's timestamps, with its audio, subtitles,
//! chapters and title, at the quality of a plain single ffmpeg run.

use std::path::Path;

use crate::common::media::*;
use crate::common::run::*;

const SRC: &str = "testsrc2=size=320x240:rate=25";

/// Transcode `input` to `output` with `args`, then compare with the input and
/// with a plain ffmpeg run of the same arguments. Twice: on the embedded
/// local cluster (the split pipes each chunk to its encoder), and with
/// `storage: nfs` whose shared directory holds the input (the encoders read
/// the source in place, no split).
fn transcode_and_check(dir: &Path, input: &str, output: &str, chunk: &str, args: &[&str]) {
    transcode_and_compare(dir, input, output, chunk, args, &[]);
}

/// [`transcode_and_check`], where the plain run must also show `expect`
/// (video stream properties: the input is what the test says it is).
/// Every property of [`VIDEO_PROPERTIES`] of each output must be the plain
/// run's; the table of them is printed.
fn transcode_and_compare(
    dir: &Path,
    input: &str,
    output: &str,
    chunk: &str,
    args: &[&str],
    expect: &[(&str, &str)],
) {
    let src = dir.join(input);
    let plain = dir.join(format!("plain.{output}"));
    let mut plain_args: Vec<&str> = vec!["-i", src.to_str().unwrap()];
    plain_args.extend(args);
    plain_args.push(plain.to_str().unwrap());
    ffmpeg(&plain_args);
    let theirs = psnr(&plain, &src);
    let want = video_props(&plain);
    for (key, value) in expect {
        let got = want.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(got, Some(*value), "plain ffmpeg's {key}");
    }
    let mut columns = vec![("source", video_props(&src)), ("plain ffmpeg", want.clone())];
    for shared in [false, true] {
        let inventory = local_inventory(dir, shared);
        let out = dir.join(if shared { format!("in-place.{output}") } else { output.to_string() });
        transcode(&src, &out, chunk, args, &inventory, shared);
        check_output(&src, &out);
        let ours = psnr(&out, &src);
        assert!(ours >= theirs - 0.3, "PSNR {ours:.2} dB vs plain ffmpeg {theirs:.2} dB (shared: {shared})");
        columns.push((if shared { "dffmpeg, read in place" } else { "dffmpeg, split" }, video_props(&out)));
    }
    let table: Vec<(&str, &[(&str, String)])> = columns.iter().map(|(n, p)| (*n, p.as_slice())).collect();
    let table = props_table(&table);
    println!("{input} -> {output} {}\n{table}", args.join(" "));
    for (name, props) in &columns[2..] {
        assert_eq!(props, &want, "{name}: the video stream's properties differ from plain ffmpeg's\n{table}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// An inventory of this machine: with `storage: nfs` and `dir` as the
/// shared directory, a source in `dir` is read in place; with `storage:
/// ssh` the chunks are split and piped.
fn local_inventory(dir: &Path, shared: bool) -> std::path::PathBuf {
    let inventory = dir.join(if shared { "shared.yaml" } else { "piped.yaml" });
    let cluster = match shared {
        true => format!(
            "  storage: nfs\n  shared_dir: {}\n",
            serde_json::Value::String(dir.canonicalize().unwrap().to_string_lossy().into_owned())
        ),
        false => "  storage: ssh\n".into(),
    };
    let roles = if shared { "controller, storage, compute" } else { "controller, compute" };
    std::fs::write(
        &inventory,
        format!("cluster:\n{cluster}nodes:\n  here: {{ host: local, roles: [{roles}] }}\n"),
    )
    .unwrap();
    inventory
}

/// `dffmpeg transcode -I INVENTORY --chunk CHUNK -o OUT SRC ARGS`; it
/// must succeed in several chunks, read in place when `shared`.
fn transcode(src: &Path, out: &Path, chunk: &str, args: &[&str], inventory: &Path, shared: bool) {
    let mut cmd = dffmpeg();
    cmd.args(["transcode", "--json", "--chunk", chunk, "-I"]).arg(inventory).arg("-o").arg(out);
    cmd.arg(src).args(args);
    let res = run(&mut cmd);
    assert!(
        res.status.success(),
        "dffmpeg failed (shared: {shared}): {}\n{}",
        String::from_utf8_lossy(&res.stderr),
        String::from_utf8_lossy(&res.stdout)
    );
    let ev = events(&res);
    assert!(count_events(&ev, "chunk_done") >= 2, "expected several chunks: {ev:?}");
    assert_eq!(count_events(&ev, "job_done"), 1);
    let start = ev.iter().find(|e| e["event"] == "job_start").expect("a job_start event");
    assert_eq!(start["read_in_place"], shared, "{start}");
}

/// The output holds exactly the input's frames at the input's times, its
/// streams, chapters and title, and its audio in place.
fn check_output(src: &Path, out: &Path) {
    // Same frames ...
    assert_eq!(frame_count(out), frame_count(src), "frame count");
    // ... at the same times (relative to the first frame).
    let a = packet_times(src, "v:0");
    let b = packet_times(out, "v:0");
    assert_eq!(a.len(), b.len(), "video packets");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let (x, y) = (x - a[0], y - b[0]);
        assert!((x - y).abs() <= 0.015, "frame {i}: {y:.4} s, input {x:.4} s");
    }
    // Streams, chapters, title.
    let (si, so) = (summary(src), summary(out));
    assert_eq!(so.streams, si.streams, "streams");
    assert_eq!(so.chapters, si.chapters, "chapters");
    assert_eq!(so.title, si.title, "title");
    // Audio: same length, same place relative to the video.
    if si.streams.iter().any(|s| s == "audio") {
        let (vs_in, _) = span(src, "v:0");
        let (vs_out, _) = span(out, "v:0");
        let (as_in, ae_in) = span(src, "a:0");
        let (as_out, ae_out) = span(out, "a:0");
        assert!(
            ((ae_out - as_out) - (ae_in - as_in)).abs() <= 0.05,
            "audio duration {} vs {}",
            ae_out - as_out,
            ae_in - as_in
        );
        let frame = a[1] - a[0];
        let offset_in = as_in - vs_in;
        let offset_out = as_out - vs_out;
        assert!(
            (offset_out - offset_in).abs() <= frame + 1e-6,
            "audio offset {offset_out:.4} vs {offset_in:.4}"
        );
    }
}

#[test]
fn cfr_h264_with_aac() {
    let d = workdir("cfr");
    clip(
        &d.join("in.mp4"),
        8,
        true,
        &["-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac"],
    );
    transcode_and_check(&d, "in.mp4", "out.mp4", "2", &["-c:v", "mpeg4", "-b:v", "1M"]);
}

#[test]
fn vfr_timestamps_are_kept() {
    let d = workdir("vfr");
    let vfr = "setpts='(N*0.04+0.015*mod(N,3))/TB'";
    clip(
        &d.join("in.mkv"),
        8,
        false,
        &[
            "-vf",
            vfr,
            "-fps_mode",
            "passthrough",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "20",
            "-enc_time_base",
            "1/1000",
        ],
    );
    transcode_and_check(&d, "in.mkv", "out.mkv", "2", X264);
}

#[test]
fn mpeg2_ts_open_gop_with_start_offset() {
    let d = workdir("ts");
    clip(
        &d.join("in.ts"),
        8,
        true,
        &[
            "-c:v",
            "mpeg2video",
            "-q:v",
            "4",
            "-g",
            "12",
            "-bf",
            "2",
            "-flags",
            "-cgop",
            "-c:a",
            "mp2",
            "-output_ts_offset",
            "10",
        ],
    );
    transcode_and_check(
        &d,
        "in.ts",
        "out.mp4",
        "2",
        &["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-c:a", "aac"],
    );
}

#[test]
fn single_keyframe() {
    let d = workdir("onekey");
    clip(
        &d.join("in.mp4"),
        8,
        false,
        &["-c:v", "libx264", "-preset", "veryfast", "-x264-params", "keyint=1000:min-keyint=1000:scenecut=0"],
    );
    transcode_and_check(&d, "in.mp4", "out.mp4", "2", &["-c:v", "mpeg4", "-q:v", "3"]);
}

#[test]
fn long_gop() {
    let d = workdir("longgop");
    clip(
        &d.join("in.mp4"),
        12,
        false,
        &["-c:v", "libx264", "-preset", "veryfast", "-x264-params", "keyint=250:min-keyint=250:scenecut=0"],
    );
    transcode_and_check(&d, "in.mp4", "out.mp4", "3", X264);
}

#[test]
fn rotated() {
    let d = workdir("rotated");
    let tmp = d.join("plain.mp4");
    clip(&tmp, 6, false, &["-c:v", "libx264", "-preset", "veryfast", "-g", "25"]);
    ffmpeg(&[
        "-i",
        tmp.to_str().unwrap(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        d.join("in.mp4").to_str().unwrap(),
    ]);
    transcode_and_check(&d, "in.mp4", "out.mp4", "2", &["-c:v", "mpeg4", "-b:v", "1M"]);
}

#[test]
fn audio_tracks_subtitles_chapters_title() {
    let d = workdir("multi");
    let srt = d.join("subs.srt");
    std::fs::write(
        &srt,
        "1\n00:00:01,000 --> 00:00:02,500\nHello\n\n2\n00:00:04,000 --> 00:00:05,000\nWorld\n",
    )
    .unwrap();
    let meta = d.join("chapters.txt");
    std::fs::write(&meta, ";FFMETADATA1\ntitle=A test title\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=3000\ntitle=One\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=3000\nEND=7000\ntitle=Two\n").unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("{SRC}:duration=7"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=7",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=880:duration=7",
        "-i",
        srt.to_str().unwrap(),
        "-i",
        meta.to_str().unwrap(),
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        "-map",
        "3",
        "-map_metadata",
        "4",
        "-map_chapters",
        "4",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "25",
        "-c:a",
        "libvorbis",
        "-c:s",
        "srt",
        "-metadata:s:a:1",
        "language=fra",
        d.join("in.mkv").to_str().unwrap(),
    ]);
    transcode_and_check(&d, "in.mkv", "out.mkv", "2", &["-c:v", "mpeg4", "-q:v", "3", "-c:a", "aac"]);
}

const X264: &[&str] = &["-c:v", "libx264", "-preset", "veryfast", "-crf", "23"];

#[test]
fn interlaced_mpeg2_ts_top_field_first() {
    let d = workdir("tff");
    interlaced_ts(&d.join("in.ts"), 4, "tff", "64/45");
    let expect = [("field_order", "tb"), ("color_range", "tv"), ("sample_aspect_ratio", "64:45")];
    transcode_and_compare(&d, "in.ts", "out.mkv", "1", X264, &expect);
}

#[test]
fn interlaced_mpeg2_ts_bottom_field_first() {
    let d = workdir("bff");
    interlaced_ts(&d.join("in.ts"), 4, "bff", "16/15");
    let expect = [("field_order", "bt"), ("color_range", "tv"), ("sample_aspect_ratio", "16:15")];
    transcode_and_compare(&d, "in.ts", "out.mkv", "1", &[X264, &["-c:a", "aac"]].concat(), &expect);
}

/// H.264 MBAFF (x264's interlaced coding), top field first, encoded
/// interlaced again. (PAFF, field pictures, no ffmpeg encoder makes.)
#[test]
fn h264_mbaff_top_field_first() {
    let d = workdir("mbaff");
    let args = [
        "-vf",
        "setfield=tff",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "25",
        "-flags",
        "+ildct+ilme",
    ];
    clip(&d.join("in.ts"), 4, false, &args);
    let interlaced = [X264, &["-flags", "+ildct+ilme"]].concat();
    transcode_and_compare(&d, "in.ts", "out.mkv", "1", &interlaced, &[("field_order", "tb")]);
}

/// H.264 coded as frames but flagged as interlaced fields (x264's
/// fake-interlaced with pic_struct, bottom field first): the decoder's
/// frames say interlaced, as with PAFF.
#[test]
fn h264_frames_flagged_bottom_field_first() {
    let d = workdir("fakeint");
    let params = "fake-interlaced=1:pic-struct=1:bff=1";
    let args =
        ["-vf", "setfield=bff", "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-x264-params", params];
    clip(&d.join("in.mp4"), 4, false, &args);
    transcode_and_compare(&d, "in.mp4", "out.mkv", "1", X264, &[("field_order", "bt")]);
}

/// Full-range 4:2:0 as JPEG makes it (MJPEG, yuvj420p, centred chroma).
#[test]
fn full_range_jpeg_style() {
    let d = workdir("fullrange");
    clip(&d.join("in.avi"), 4, false, &["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"]);
    let expect = [("color_range", "pc"), ("pix_fmt", "yuvj420p"), ("chroma_location", "center")];
    transcode_and_compare(&d, "in.avi", "out.mp4", "1", X264, &expect);
}

/// BT.709-tagged H.264, into MPEG-4 Part 2 (whose bitstream has no colour
/// tags: only the container carries them).
#[test]
fn bt709_tagged() {
    let d = workdir("bt709");
    let tags =
        ["-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv"];
    clip(
        &d.join("in.mp4"),
        4,
        false,
        &[&["-c:v", "libx264", "-preset", "veryfast", "-g", "25"], &tags[..]].concat(),
    );
    let expect = [("color_primaries", "bt709"), ("color_transfer", "bt709"), ("color_space", "bt709")];
    transcode_and_compare(&d, "in.mp4", "out.mp4", "1", &["-c:v", "mpeg4", "-q:v", "3"], &expect);
}

/// HDR10 signalling: 10-bit HEVC, BT.2020 primaries and matrix, PQ.
#[test]
fn bt2020_pq_10_bit_hevc() {
    let d = workdir("hdr10");
    let args = [
        "-pix_fmt",
        "yuv420p10le",
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-x265-params",
        "log-level=error:keyint=25",
        "-color_primaries",
        "bt2020",
        "-color_trc",
        "smpte2084",
        "-colorspace",
        "bt2020nc",
        "-color_range",
        "tv",
    ];
    clip(&d.join("in.mkv"), 4, false, &args);
    let x265 = ["-c:v", "libx265", "-preset", "ultrafast", "-crf", "28", "-x265-params", "log-level=error"];
    let expect = [("pix_fmt", "yuv420p10le"), ("color_transfer", "smpte2084"), ("color_primaries", "bt2020")];
    transcode_and_compare(&d, "in.mkv", "out.mp4", "1", &x265, &expect);
}

#[test]
fn hostile_file_name() {
    let d = workdir("hostile");
    let name = "a b'c\"$(touch pwned);`id` ünï 视频.mp4";
    clip(&d.join(name), 5, true, &["-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-c:a", "aac"]);
    transcode_and_check(&d, name, "out $(touch pwned2); 'x'.mkv", "2", &["-c:v", "mpeg4", "-q:v", "4"]);
    assert!(!Path::new("pwned").exists() && !d.join("pwned").exists());
}

/// Issue 26's command: MPEG-2 into a transport stream (no B-frames, yet
/// one frame of reorder delay: NUT leaves its chunks' start time unknown).
#[test]
fn mpeg2_into_ts() {
    let d = workdir("mpeg2out");
    clip(&d.join("in.mp4"), 4, true, &["-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-c:a", "aac"]);
    transcode_and_check(&d, "in.mp4", "out.ts", "1", &["-c:v", "mpeg2video", "-q:v", "4", "-c:a", "mp2"]);
}
