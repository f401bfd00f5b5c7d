//! `--diff`: a unified diff of a file's content, `--- PATH (before)` /
//! `+++ PATH (after)`, three lines of context.

use similar::TextDiff;

pub fn unified(path: &str, before: Option<&[u8]>, after: &[u8]) -> String {
    let old = String::from_utf8_lossy(before.unwrap_or_default());
    let new = String::from_utf8_lossy(after);
    let diff = TextDiff::from_lines(old.as_ref(), new.as_ref());
    let mut text = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (before)"), &format!("{path} (after)"))
        .to_string();
    if text.is_empty() {
        return text;
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_format() {
        let d = unified("/etc/exports", Some(b"a\nb\nc\n"), b"a\nB\nc\n");
        assert_eq!(
            d,
            "--- /etc/exports (before)\n+++ /etc/exports (after)\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
        );
        let new = unified("/x", None, b"one\n");
        assert_eq!(new, "--- /x (before)\n+++ /x (after)\n@@ -0,0 +1 @@\n+one\n");
        assert_eq!(unified("/x", Some(b"same\n"), b"same\n"), "");
    }
}
