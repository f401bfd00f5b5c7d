//! Text that came from a node (ffmpeg's stderr, task output, facts) made
//! safe to print: a node must not be able to move the cursor, retitle the
//! terminal or hide lines with escape sequences.

/// `s` without terminal escape sequences (CSI `ESC [ … final`, OSC `ESC ]
/// … BEL/ST`, two-byte `ESC x`) and other control characters; tabs and
/// newlines stay.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, PM, APC, SOS: up to BEL or ST (ESC \).
                Some(']' | 'P' | '^' | '_' | 'X') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' | '\n' => out.push(c),
            // C0 and C1 controls (a bare CR could overwrite a line).
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The longest line kept of what a node prints; the rest of a longer line
/// is read and dropped (a node must not make the controller hold or
/// forward an unbounded line).
pub const MAX_LINE: usize = 64 << 10;

/// A line reader with a bound: lines end at `\n`, each is cut at
/// [`MAX_LINE`] bytes (what follows on that line is skipped), and bytes
/// that are not UTF-8 are replaced.
pub struct BoundedLines<R> {
    reader: R,
    max: usize,
}

impl<R: tokio::io::AsyncBufRead + Unpin> BoundedLines<R> {
    pub fn new(reader: R) -> Self {
        BoundedLines { reader, max: MAX_LINE }
    }

    /// The next line (without its `\n`), or None at the end.
    pub async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        use tokio::io::AsyncBufReadExt;
        let mut line = Vec::new();
        let mut any = false;
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                return Ok(any.then(|| String::from_utf8_lossy(&line).into_owned()));
            }
            any = true;
            let (take, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            let room = self.max.saturating_sub(line.len());
            line.extend_from_slice(&buf[..take.min(room)]);
            self.reader.consume(take + usize::from(end));
            if end {
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
        }
    }
}

/// Read `reader` to its end, keeping its first `cap` bytes (the rest is
/// read and dropped, so the writer never blocks); whether it was cut.
pub async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    reader: R,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut head = reader.take(cap as u64);
    head.read_to_end(&mut buf).await?;
    let dropped = tokio::io::copy(&mut head.into_inner(), &mut tokio::io::sink()).await?;
    Ok((buf, dropped > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_never_splits_a_character() {
        assert_eq!(cut("视频abc", 4), "视");
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("abc", 0), "");
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_the_rest_still_read() {
        let long = "x".repeat(MAX_LINE * 3);
        let mut text = format!("a\n{long}\nb").into_bytes();
        text.extend_from_slice(b"\xff\nlast");
        let mut lines = BoundedLines::new(std::io::Cursor::new(text));
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("a"));
        assert_eq!(lines.next_line().await.unwrap().map(|l| l.len()), Some(MAX_LINE));
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("b\u{fffd}"));
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("last"));
        assert_eq!(lines.next_line().await.unwrap(), None);
        let (head, cut) = read_capped(&b"0123456789"[..], 4).await.unwrap();
        assert_eq!((head.as_slice(), cut), (&b"0123"[..], true));
    }

    #[test]
    fn escapes_and_controls_go() {
        assert_eq!(printable("plain ünï 视频\tx\n"), "plain ünï 视频\tx\n");
        assert_eq!(printable("\x1b[31mred\x1b[0m"), "red");
        assert_eq!(printable("a\x1b]0;pwned title\x07b"), "ab");
        assert_eq!(printable("a\x1b]2;t\x1b\\b"), "ab");
        assert_eq!(printable("over\rwrite\x08\u{9b}2J"), "overwrite2J");
        assert_eq!(printable("cut \x1b["), "cut ");
    }
}
