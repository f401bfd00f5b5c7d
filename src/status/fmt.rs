//! Words and numbers shared by `dffmpeg status` and the status page:
//! durations, ages, clock times, file names.

/// `1:02:03` (or `2:03` under an hour).
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s >= 3600 {
        true => format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
        false => format!("{}:{:02}", s / 60, s % 60),
    }
}

/// How long ago `then` was: `just now`, `12 s ago`, `5 min ago`, `3 h
/// ago`, `2 days ago`.
pub fn ago(now: f64, then: f64) -> String {
    let s = (now - then).max(0.0).round() as u64;
    match s {
        0..=2 => "just now".into(),
        3..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

/// How long something has run: `45 s`, `12 min`, `3 h 5 min`, `2 days`.
pub fn span(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=3599 => format!("{} min", s / 60),
        3600..=172_799 => format!("{} h {} min", s / 3600, s / 60 % 60),
        _ => format!("{} days", s / 86400),
    }
}

/// `14:03:12`, this machine's local time of a Unix time.
pub fn clock(unix: f64) -> String {
    let t = unix as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value; localtime_r writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        let s = unix.max(0.0) as u64 % 86400;
        return format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60);
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// The last component of a path (the path itself when it has none).
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

/// The directory part of a path, with its final `/` (empty when none).
pub fn parent(path: &str) -> &str {
    let name = file_name(path);
    path.rfind(name).map_or("", |i| &path[..i])
}

/// `1 chunk`, `3 chunks`.
pub fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// `42.0` or `–` when unknown.
pub fn opt1(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |x| format!("{x:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_for_times_and_paths() {
        assert_eq!(duration(59.6), "1:00");
        assert_eq!(duration(3723.0), "1:02:03");
        assert_eq!(duration(-5.0), "0:00");
        assert_eq!(ago(100.0, 99.0), "just now");
        assert_eq!(ago(100.0, 40.0), "60 s ago");
        assert_eq!(ago(10_000.0, 9_000.0), "16 min ago");
        assert_eq!(ago(100_000.0, 0.0), "27 h ago");
        assert_eq!(ago(1e6, 0.0), "11 days ago");
        assert_eq!(span(3900.0), "1 h 5 min");
        assert_eq!(file_name("/srv/up/a b.mp4"), "a b.mp4");
        assert_eq!(parent("/srv/up/a b.mp4"), "/srv/up/");
        assert_eq!(file_name("x.mp4"), "x.mp4");
        assert_eq!(parent("x.mp4"), "");
        assert_eq!(opt1(None), "–");
        assert_eq!((count(1, "chunk"), count(0, "chunk")), ("1 chunk".into(), "0 chunks".into()));
        assert_eq!(opt1(Some(41.96)), "42.0");
    }
}
