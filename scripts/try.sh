#!/bin/bash
# Install what is missing (ffmpeg), build dffmpeg and transcode a generated
# 30 s 720p sample on the embedded local cluster (this machine's cores).
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y ffmpeg
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
