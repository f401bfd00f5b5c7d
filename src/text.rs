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

#[cfg(test)]
mod tests {
    use super::*;

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
