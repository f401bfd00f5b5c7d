//! The one place where a remote shell command line is built.
//!
//! Every command that crosses SSH is an argv joined by [`join`]; nothing is
//! ever pasted into a shell string unquoted, so a file name like
//! `a b'$(touch x);c.mp4` stays a single, inert word on the remote side.

/// Quote one word for a POSIX shell. Words made only of safe characters stay
/// as they are (readable logs); anything else is wrapped in single quotes,
/// with embedded single quotes written as `'\''`.
pub fn quote(word: &str) -> String {
    let safe =
        !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:,+@%".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Join an argv into one shell command line, each word quoted.
pub fn join<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter().map(|w| quote(w.as_ref())).collect::<Vec<_>>().join(" ")
}

/// One word for a systemd unit's command line: in double quotes, with
/// `\`, `"`, `%` (specifiers), `$` (variables) and newlines escaped.
pub fn systemd(word: &str) -> String {
    let mut q = String::from("\"");
    for c in word.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '"' => q.push_str("\\\""),
            '%' => q.push_str("%%"),
            '$' => q.push_str("$$"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn roundtrip(words: &[&str]) -> Vec<String> {
        let line = format!("printf '%s\\0' {}", join(words));
        let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
        assert!(out.status.success(), "{line}");
        String::from_utf8(out.stdout).unwrap().split_terminator('\0').map(str::to_string).collect()
    }

    #[test]
    fn hostile_words_survive_a_real_shell() {
        let words = [
            "plain",
            "with space",
            "quote'd",
            "double\"q",
            "$(touch /tmp/dffmpeg-pwned)",
            "`id`",
            "a;b&&c|d",
            "ünïcødé 视频.mp4",
            "new\nline",
            "",
            "*",
            "~",
            "-dash",
            "back\\slash",
        ];
        assert_eq!(roundtrip(&words), words);
        assert!(!std::path::Path::new("/tmp/dffmpeg-pwned").exists());
    }

    #[test]
    fn safe_words_are_left_readable() {
        assert_eq!(join(&["ffmpeg", "-c:v", "libx264", "/srv/a.mkv"]), "ffmpeg -c:v libx264 /srv/a.mkv");
    }
}
