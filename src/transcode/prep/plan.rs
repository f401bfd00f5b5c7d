//! Plan: cut the video timeline into chunks, at keyframes where possible.
//!
//! A chunk is a half-open presentation-time range `[start, end)` of the
//! source video (in its time base). Its frames are exactly the source frames
//! whose pts falls in the range, so consecutive chunks can neither lose nor
//! duplicate a frame. To encode a chunk a node gets the source packets from
//! the last keyframe at or before `start` (decode order) up to the last
//! packet it needs to show every frame before `end`; it decodes them and
//! keeps only the frames in range. When `start` is a keyframe (the normal
//! case) nothing is decoded twice; with long GOPs or a single keyframe the
//! cut falls between keyframes and the node decodes a preroll, which is the
//! decode-side exact cut.

use serde::{Deserialize, Serialize};

use crate::transcode::probe::{Packet, Rational};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub index: usize,
    /// First pts of the chunk (inclusive), in the video time base.
    pub start: i64,
    /// End pts (exclusive); `None` for the last chunk.
    pub end: Option<i64>,
    /// Frames the encoded chunk must hold.
    pub frames: u64,
    /// Decode-order index of the first source packet to send.
    pub first_packet: usize,
    /// Number of source packets to send.
    pub packets: usize,
    /// pts of that first packet (a keyframe); the split seeks there.
    pub seek_pts: i64,
    /// Where the node's trim cuts, in seconds: halfway between the chunk's
    /// first frame and the frame before it (none for the very first).
    pub trim_start: Option<f64>,
    /// Halfway between the chunk's last frame and the next chunk's first.
    pub trim_end: Option<f64>,
}

impl Chunk {
    /// Whether the chunk starts on a keyframe (no decode preroll).
    pub fn starts_on_keyframe(&self) -> bool {
        self.seek_pts == self.start
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub time_base: Rational,
    pub chunks: Vec<Chunk>,
    pub total_frames: u64,
    /// Typical (median) frame duration in seconds.
    pub frame_seconds: f64,
    /// Packets before the first keyframe: undecodable, not part of the output
    /// (a plain ffmpeg drops them too).
    pub skipped_leading: usize,
}

/// What is wrong with a plan read back from a job file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("time base {0}")]
    TimeBase(String),
    #[error("no chunks")]
    NoChunks,
    #[error("the last chunk has an end")]
    LastHasEnd,
    #[error("chunk {0}")]
    Chunk(usize),
    #[error("chunk {0} does not meet the next")]
    Gap(usize),
    #[error("the chunks' frames do not add up")]
    Frames,
    #[error("frame duration")]
    FrameDuration,
}

impl Plan {
    pub fn first_pts(&self) -> i64 {
        self.chunks[0].start
    }

    /// Seconds added to every timestamp in the chunk files, so that no
    /// decode timestamp is negative (NUT cannot store those): the first frame
    /// lands at 10 s or later. The concat demuxer takes it out again.
    pub fn ts_shift(&self) -> f64 {
        let first = self.time_base.seconds(self.first_pts());
        10.0 + (-first).max(0.0).ceil()
    }

    /// Whether a plan read back from a job file can be used: chunks that
    /// partition the timeline, a real time base. Why not, if not.
    pub fn validate(&self) -> Result<(), PlanError> {
        let tb = self.time_base;
        if tb.num <= 0 || tb.den <= 0 {
            return Err(PlanError::TimeBase(tb.to_string()));
        }
        let Some(last) = self.chunks.last() else { return Err(PlanError::NoChunks) };
        if last.end.is_some() {
            return Err(PlanError::LastHasEnd);
        }
        for (i, c) in self.chunks.iter().enumerate() {
            if c.index != i || c.frames == 0 || c.packets == 0 || c.seek_pts > c.start {
                return Err(PlanError::Chunk(i));
            }
            if let Some(next) = self.chunks.get(i + 1) {
                if c.end != Some(next.start) || next.start <= c.start {
                    return Err(PlanError::Gap(i));
                }
            }
        }
        if self.chunks.iter().map(|c| c.frames).sum::<u64>() != self.total_frames {
            return Err(PlanError::Frames);
        }
        if !(self.frame_seconds.is_finite() && self.frame_seconds >= 0.0) {
            return Err(PlanError::FrameDuration);
        }
        Ok(())
    }

    /// Seconds covered by a chunk (the last one: up to the last frame).
    pub fn chunk_seconds(&self, c: &Chunk, last_pts: i64) -> f64 {
        self.time_base.seconds(c.end.unwrap_or(last_pts) - c.start)
    }
}

/// Chunks shorter than this cost more in start-up (an encoder start, a
/// verify, a split unless the source is read in place: 0.15–0.3 CPU-s) and
/// quality than they gain in balance (2 s measured no faster than 3 s).
pub const MIN_CHUNK_SECONDS: f64 = 3.0;
/// Longer chunks would make a lost node or a restart cost too much.
pub const MAX_CHUNK_SECONDS: f64 = 120.0;

/// How long the chunks are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sizing {
    /// `--chunk SECONDS`: every chunk about this long.
    Fixed(f64),
    /// The default, guided self-scheduling: each chunk is the remaining
    /// time divided by the slots (within [`MIN_CHUNK_SECONDS`,
    /// [`MAX_CHUNK_SECONDS`]]), so the chunks shrink along the timeline.
    /// Taken longest first, the long ones keep every slot busy with few
    /// start-ups and the short ones even out the end.
    /// `after`: seconds of video queued behind this file in a batch, which
    /// the slots will share too: the early files of a folder get long
    /// chunks (often one per file), the last one is split finely.
    Guided { slots: usize, after: f64 },
}

impl Sizing {
    /// Target length in ticks of the chunk after `start`, `remaining` ticks
    /// before the last frame.
    fn target(self, remaining: i64, ticks_per_second: f64) -> i64 {
        let seconds = match self {
            Sizing::Fixed(s) => s,
            Sizing::Guided { slots, after } => {
                let remaining = remaining.max(0) as f64 / ticks_per_second + after.max(0.0);
                (remaining / slots.max(1) as f64).clamp(MIN_CHUNK_SECONDS, MAX_CHUNK_SECONDS)
            }
        };
        ((seconds * ticks_per_second).round() as i64).max(1)
    }
}

pub fn plan(packets: &[Packet], time_base: Rational, sizing: Sizing) -> Plan {
    let first_key = packets.iter().position(|p| p.key).unwrap_or(0);
    let origin = packets[first_key].pts;
    let usable = &packets[first_key..];

    let mut frame_pts: Vec<i64> = usable.iter().map(|p| p.pts).filter(|&p| p >= origin).collect();
    frame_pts.sort_unstable();
    let key_pts: Vec<i64> = usable.iter().filter(|p| p.key).map(|p| p.pts).collect();

    let mut all_pts: Vec<i64> = packets.iter().map(|p| p.pts).collect();
    all_pts.sort_unstable();
    // Cut halfway between a boundary frame and the frame shown before it.
    let midpoint = |b: i64| {
        let i = all_pts.partition_point(|&p| p < b);
        (i > 0).then(|| time_base.seconds(all_pts[i - 1]) / 2.0 + time_base.seconds(b) / 2.0)
    };

    let ticks_per_second = time_base.den as f64 / time_base.num as f64;
    let cuts = choose_cuts(&frame_pts, &key_pts, |remaining| sizing.target(remaining, ticks_per_second));

    let mut chunks = Vec::with_capacity(cuts.len());
    for (i, &start) in cuts.iter().enumerate() {
        let end = cuts.get(i + 1).copied();
        let frames = frame_pts.iter().filter(|&&p| p >= start && end.is_none_or(|e| p < e)).count() as u64;
        // Last keyframe (decode order) whose pts is at or before the start.
        let first = usable.iter().rposition(|p| p.key && p.pts <= start).unwrap_or(0);
        let last = match end {
            None => usable.len() - 1,
            Some(e) => usable.iter().rposition(|p| p.pts >= start && p.pts < e).unwrap_or(first),
        };
        chunks.push(Chunk {
            index: i,
            start,
            end,
            frames,
            first_packet: first_key + first,
            packets: last + 1 - first,
            seek_pts: usable[first].pts,
            trim_start: midpoint(start),
            trim_end: end.and_then(midpoint),
        });
    }
    let mut deltas: Vec<i64> = frame_pts.windows(2).map(|w| w[1] - w[0]).collect();
    deltas.sort_unstable();
    let frame_seconds = deltas.get(deltas.len() / 2).map_or(0.0, |&d| time_base.seconds(d));
    Plan {
        time_base,
        frame_seconds,
        total_frames: frame_pts.len() as u64,
        chunks,
        skipped_leading: packets.len() - frame_pts.len(),
    }
}

/// Chunk starts: the first frame, then a cut `target(ticks left)` ticks
/// after the previous one — the keyframe closest to the ideal point within
/// half a chunk of it, else the frame closest to it. The last chunk absorbs
/// a short remainder.
fn choose_cuts(frame_pts: &[i64], key_pts: &[i64], target: impl Fn(i64) -> i64) -> Vec<i64> {
    let Some(&first) = frame_pts.first() else {
        return vec![0];
    };
    let last = *frame_pts.last().unwrap_or(&first);
    let mut cuts = vec![first];
    let mut start = first;
    loop {
        let target = target(last - start);
        let ideal = start + target;
        if ideal + target / 2 > last {
            break;
        }
        let lo = start + target / 2;
        let hi = ideal + target / 2;
        let closest = |c: &&i64| (**c - ideal).abs();
        let cut = key_pts
            .iter()
            .filter(|&&k| k > lo && k <= hi)
            .min_by_key(closest)
            .or_else(|| frame_pts.iter().filter(|&&f| f > start).min_by_key(closest))
            .copied();
        match cut {
            Some(c) if c > start && c <= last => {
                cuts.push(c);
                start = c;
            }
            _ => break,
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: Rational = Rational { num: 1, den: 25 };

    /// Frames 0..n at 1 tick each, decode order = presentation order.
    fn intra_gop(n: i64, gop: i64) -> Vec<Packet> {
        (0..n).map(|i| Packet { pts: i, key: i % gop == 0 }).collect()
    }

    fn check_partition(plan: &Plan, n: u64) {
        assert_eq!(plan.validate(), Ok(()));
        assert_eq!(plan.chunks.iter().map(|c| c.frames).sum::<u64>(), n);
        assert_eq!(plan.total_frames, n);
        for w in plan.chunks.windows(2) {
            assert_eq!(w[0].end, Some(w[1].start));
        }
        assert_eq!(plan.chunks.last().unwrap().end, None);
    }

    #[test]
    fn cuts_fall_on_keyframes() {
        // 250 frames, keyframe every 25 (1 s), 2 s chunks.
        let p = plan(&intra_gop(250, 25), TB, Sizing::Fixed(2.0));
        check_partition(&p, 250);
        assert_eq!(p.chunks.len(), 5);
        for c in &p.chunks {
            assert!(c.starts_on_keyframe());
            assert_eq!(c.start % 25, 0);
            assert_eq!(c.packets as u64, c.frames);
        }
    }

    #[test]
    fn single_keyframe_falls_back_to_decode_side_cuts() {
        let p = plan(&intra_gop(200, 1000), TB, Sizing::Fixed(2.0));
        check_partition(&p, 200);
        assert_eq!(p.chunks.len(), 4);
        assert!(p.chunks[1..].iter().all(|c| !c.starts_on_keyframe()));
        // Every chunk is sent from the one keyframe.
        assert!(p.chunks.iter().all(|c| c.first_packet == 0 && c.seek_pts == 0));
        assert_eq!(p.chunks[1].start, 50);
        assert_eq!(p.chunks[1].packets, 100);
        assert_eq!(p.chunks[1].trim_start, Some(49.5 / 25.0));
        assert_eq!(p.chunks[1].trim_end, Some(99.5 / 25.0));
        assert_eq!(p.chunks[0].trim_start, None);
    }

    #[test]
    fn open_gop_sends_the_leading_frames_with_the_previous_chunk() {
        // Decode order: I0 P3 B1 B2 | I6 B4 B5 P9 B7 B8 | I12 B10 B11 ...
        // (each I after the first has leading B frames shown before it).
        let mut pk = vec![
            Packet { pts: 0, key: true },
            Packet { pts: 3, key: false },
            Packet { pts: 1, key: false },
            Packet { pts: 2, key: false },
        ];
        for g in 1..10 {
            let b = g * 6;
            pk.extend([
                Packet { pts: b, key: true },
                Packet { pts: b - 2, key: false },
                Packet { pts: b - 1, key: false },
                Packet { pts: b + 3, key: false },
                Packet { pts: b + 1, key: false },
                Packet { pts: b + 2, key: false },
            ]);
        }
        let n = pk.len() as u64;
        let tb = Rational { num: 1, den: 6 };
        let p = plan(&pk, tb, Sizing::Fixed(2.0));
        check_partition(&p, n);
        let c0 = &p.chunks[0];
        assert_eq!((c0.start, c0.end), (0, Some(12)));
        // Chunk 0 must include I12's leading B10 and B11 (decode order after I12).
        let sent: Vec<i64> =
            pk[c0.first_packet..c0.first_packet + c0.packets].iter().map(|p| p.pts).collect();
        assert!(sent.contains(&10) && sent.contains(&11) && sent.contains(&12));
        let c1 = &p.chunks[1];
        assert_eq!(c1.seek_pts, 12);
        assert!(c1.starts_on_keyframe());
    }

    #[test]
    fn leading_packets_before_the_first_keyframe_are_skipped() {
        let mut pk = vec![Packet { pts: 0, key: false }, Packet { pts: 1, key: false }];
        pk.extend((2..100).map(|i| Packet { pts: i, key: i % 10 == 2 }));
        let p = plan(&pk, TB, Sizing::Fixed(1.0));
        assert_eq!(p.skipped_leading, 2);
        check_partition(&p, 98);
        assert_eq!(p.first_pts(), 2);
    }

    #[test]
    fn a_short_video_is_one_chunk() {
        let p = plan(&intra_gop(10, 5), TB, Sizing::Fixed(3.0));
        assert_eq!(p.chunks.len(), 1);
        check_partition(&p, 10);
    }

    #[test]
    fn guided_chunks_shrink_toward_the_end() {
        // 60 s at 25 fps, keyframe every 2 s, 2 slots: half of what is left
        // each time, at keyframes, down to the 3 s minimum.
        let p = plan(&intra_gop(1500, 50), TB, Sizing::Guided { slots: 2, after: 0.0 });
        check_partition(&p, 1500);
        let secs: Vec<u64> = p.chunks.iter().map(|c| c.frames / 25).collect();
        assert_eq!(secs, [30, 14, 8, 4, 4]);
        assert!(p.chunks.iter().all(|c| c.starts_on_keyframe()));
        // A long film on a big cluster: no chunk over the maximum.
        let p = plan(&intra_gop(25 * 3600, 250), TB, Sizing::Guided { slots: 4, after: 0.0 });
        check_partition(&p, 25 * 3600);
        assert!(p.chunks.iter().all(|c| c.frames as f64 <= 25.0 * MAX_CHUNK_SECONDS * 1.5));
        assert!(p.chunks.windows(2).all(|w| w[0].frames >= w[1].frames || w[1].end.is_none()));
    }

    #[test]
    fn a_file_with_a_batch_behind_it_gets_longer_chunks() {
        // The same 60 s, 2 slots, with 240 s of other files queued behind:
        // 150 s per slot, so the whole file is one chunk.
        let p = plan(&intra_gop(1500, 50), TB, Sizing::Guided { slots: 2, after: 240.0 });
        assert_eq!(p.chunks.len(), 1);
        check_partition(&p, 1500);
        // 10 s behind it: (60 + 10) / 2 = 35 s first (at a keyframe), then
        // the rest, too short to split again.
        let p = plan(&intra_gop(1500, 50), TB, Sizing::Guided { slots: 2, after: 10.0 });
        check_partition(&p, 1500);
        let secs: Vec<u64> = p.chunks.iter().map(|c| c.frames / 25).collect();
        assert_eq!(secs, [34, 26]);
    }
}
