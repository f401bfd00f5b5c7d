//! Standard base64 (RFC 4648, padded), to carry file contents through shell
//! scripts and back without any quoting concern: the `base64` crate, plus
//! the line wrapping `base64 -d` in a heredoc reads.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

pub fn encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Encoded text wrapped at 76 columns, each line ending in `\n` (for heredocs).
pub fn encode_lines(data: &[u8]) -> String {
    let flat = encode(data);
    let mut out = String::with_capacity(flat.len() + flat.len() / 76 + 1);
    for line in flat.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Decode padded standard base64; line breaks (coreutils wraps at 76) and
/// other white space are ignored.
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let flat: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    STANDARD.decode(flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_coreutils() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", &[0, 255, 128, 7]] {
            assert_eq!(decode(&encode(data)).unwrap(), data);
        }
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(decode("Zm9v\nYmE=\n").unwrap(), b"fooba");
        assert!(decode("Zm9v!").is_err());
        let long = vec![b'x'; 200];
        assert!(encode_lines(&long).lines().all(|l| l.len() <= 76));
        assert_eq!(decode(&encode_lines(&long)).unwrap(), long);
    }
}
