//! What a job leaves to look at: the job directory `--keep` keeps.

use crate::common::media::*;
use crate::common::run::*;

/// `--keep` keeps exactly what its help says.
#[test]
fn keep_keeps_what_its_help_says() {
    let d = workdir("keep");
    let input = sample(&d, "in.mp4", 3);
    let out = d.join("out.mp4");
    let r = run(dffmpeg()
        .args(["transcode", "--keep", "--chunk", "1", "-o"])
        .arg(&out)
        .arg(&input)
        .args(["-c:v", "mpeg4", "-c:a", "aac"]));
    success(r, "transcode --keep");
    let mut kept: Vec<String> = std::fs::read_dir(d.join(".out.mp4.dffmpeg-job"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    let chunks = ["chunk_00000.nut", "chunk_00001.nut", "chunk_00002.nut"];
    assert_eq!(
        kept,
        [&chunks[..], &["concat.txt", "job.json", "lock", "reference.json", "side.mp4"]].concat()
    );
    let help = ok(run(dffmpeg().args(["transcode", "--help"])), "--help");
    for name in ["chunk_NNNNN.nut", "concat.txt", "job.json", "reference.json", "side.EXT"] {
        assert!(help.contains(name), "{name} in {help}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
