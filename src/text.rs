//! Text that came from a node (stderr, task output, facts strings) made
//! safe to print on a terminal: a node must not be able to move the
//! cursor, retitle the window, rewrite earlier report lines or hide its
//! own messages through escape sequences.

/// `text` without terminal control: ANSI/VT escape sequences (CSI `ESC [`
/// ... final byte, OSC `ESC ]` ... BEL or `ESC \`, DCS/SOS/PM/APC strings,
/// two-byte `ESC x`), their 8-bit C1 forms (U+0080..U+009F), and every
/// other control character except newline and tab. A carriage return is
/// dropped too (it could overwrite the start of a line). Printable text,
/// including non-ASCII, is kept as is.
pub fn strip_terminal_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => skip_csi(&mut chars),
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST.
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // Two-byte sequences (ESC 7, ESC c, ESC ( B ...): one more
                // byte for the charset designators.
                Some('(' | ')' | '*' | '+' | '-' | '.' | '/' | '#' | '%' | ' ') => {
                    chars.next();
                }
                Some(_) | None => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
        // A control character ends a broken sequence; it is dropped too.
        if !('\u{20}'..='\u{3f}').contains(&c) {
            return;
        }
    }
}

fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_go_text_stays() {
        assert_eq!(
            strip_terminal_escapes("plain text, ünïcødé 视频\n\tok"),
            "plain text, ünïcødé 视频\n\tok"
        );
        assert_eq!(strip_terminal_escapes("\u{1b}[31mred\u{1b}[0m"), "red");
        assert_eq!(strip_terminal_escapes("a\u{1b}[2J\u{1b}[1;1Hb"), "ab");
        assert_eq!(strip_terminal_escapes("\u{1b}]0;owned title\u{7}x"), "x");
        assert_eq!(strip_terminal_escapes("\u{1b}]8;;http://evil\u{1b}\\link\u{1b}]8;;\u{1b}\\"), "link");
        assert_eq!(strip_terminal_escapes("\u{1b}P+q544e\u{1b}\\y"), "y");
        assert_eq!(strip_terminal_escapes("\u{9b}31mc1\u{9d}title\u{9c}"), "c1");
        assert_eq!(strip_terminal_escapes("ok: [pi2]\rfailed: [pi2]"), "ok: [pi2]failed: [pi2]");
        assert_eq!(strip_terminal_escapes("bell\u{7} back\u{8}space\u{0}nul"), "bell backspacenul");
        assert_eq!(strip_terminal_escapes("\u{1b}(Bcharset \u{1b}7saved"), "charset saved");
        assert_eq!(strip_terminal_escapes("cut \u{1b}[31"), "cut ");
        assert_eq!(strip_terminal_escapes("\u{1b}"), "");
    }
}
