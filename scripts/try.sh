#!/bin/bash
# Install what is missing (ffmpeg, Rust), build dffmpeg and transcode a generated
# 30 s 720p sample on the embedded local cluster (this machine's cores).
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# ffmpeg, and a Rust toolchain when there is none: Debian 12's rustc-web and
# cargo-web (bookworm's plain rustc 1.63 is too old for this tree's crates).
missing=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v cargo >/dev/null || missing+=(rustc-web cargo-web gcc libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
cargo build --release
dir=${TMPDIR:-/var/tmp}/dffmpeg-try
mkdir -p "$dir"
sample="$dir/sample.mp4"
[ -f "$sample" ] || ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i testsrc2=size=1280x720:rate=25:duration=30 -f lavfi -i sine=frequency=440:duration=30 \
  -c:v libx264 -preset veryfast -g 50 -pix_fmt yuv420p -c:a aac -shortest "$sample"
./target/release/dffmpeg transcode -y -o "$dir/sample.dffmpeg.mp4" "$sample" -c:v mpeg4 -b:v 1M -c:a aac
ffprobe -v error -count_frames -show_entries stream=codec_type,codec_name,nb_read_frames,duration -of compact "$dir/sample.dffmpeg.mp4"
