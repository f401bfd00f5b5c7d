//! The status page of the watch service (`cluster.watch.http`): a minimal
//! HTTP/1.1 responder on tokio's listener, no framework. Read-only: `GET`
//! (and `HEAD`) of `/` (the page) and `/status.json` (what `dffmpeg status
//! --json` prints); anything else is refused. Bounded: a request head of
//! at most [`MAX_REQUEST`] bytes, [`TIMEOUT`] for a whole exchange,
//! [`MAX_CONNECTIONS`] at once (more are closed at once), one request per
//! connection. Served on loopback, it answers only requests addressed to
//! loopback (`Host: 127.0.0.1:PORT`, `localhost`): a web page elsewhere
//! cannot read it through a DNS name that it points at 127.0.0.1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{page, sink, store};

pub const MAX_REQUEST: usize = 8192;
pub const TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: usize = 16;

/// Listen on `addr` (before the work starts, so that a taken port is told
/// at once).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The page's address for people: `http://ADDR/`.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

/// What the page shows: the state directory, and the inventory whose
/// transcodes it lists (None: all of them).
#[derive(Debug, Clone)]
pub struct Source {
    pub state: PathBuf,
    pub inventory: Option<String>,
}

/// Serve until the task is aborted.
pub fn serve(listener: TcpListener, source: Source) -> tokio::task::JoinHandle<()> {
    let source = Arc::new(source);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors and the like: try again shortly.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            // Too many at once: this one is closed unanswered.
            let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
            let source = source.clone();
            tokio::spawn(async move {
                // A client too slow or gone: nothing to tell it.
                let _ = tokio::time::timeout(TIMEOUT, exchange(stream, &source, loopback)).await;
                drop(permit);
            });
        }
    })
}

/// A response: status line, content type, body.
#[derive(Debug, PartialEq)]
pub struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// `HEAD`: the headers only.
    pub head_only: bool,
}

async fn exchange(mut stream: TcpStream, source: &Source, loopback: bool) -> std::io::Result<()> {
    let head = read_head(&mut stream).await?;
    let response = match &head {
        Some(head) => respond(head, source, loopback).await,
        None => plain("431 Request Header Fields Too Large", "request too large\n"),
    };
    stream.write_all(&encode(&response)).await?;
    stream.shutdown().await?;
    if head.is_none() {
        // What the client still sends is read and dropped (a bounded
        // amount): closing on unread data would reset the connection, and
        // the client might lose the answer.
        let mut sink = [0u8; 4096];
        let mut left = 16 * MAX_REQUEST;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
    }
    Ok(())
}

/// The request head, up to its blank line; None when it is too long.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Some(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What a request gets.
async fn respond(head: &[u8], source: &Source, loopback: bool) -> Response {
    let route = match route(head) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if loopback && !to_loopback(head) {
        return plain("403 Forbidden", "this page answers requests to 127.0.0.1 or localhost only\n");
    }
    let (state, inventory) = (source.state.clone(), source.inventory.clone());
    let report =
        tokio::task::spawn_blocking(move || store::collect(&state, inventory.as_deref(), sink::unix_now()))
            .await;
    let Ok(report) = report else {
        return plain("500 Internal Server Error", "the status could not be read\n");
    };
    let mut r = match route.0 {
        Page::Html => Response {
            status: "200 OK",
            content_type: "text/html; charset=utf-8",
            body: page::html(&report).into_bytes(),
            head_only: false,
        },
        Page::Json => Response {
            status: "200 OK",
            content_type: "application/json",
            body: serde_json::to_vec_pretty(&report).unwrap_or_default(),
            head_only: false,
        },
    };
    r.head_only = route.1;
    r
}

#[derive(Debug, PartialEq)]
enum Page {
    Html,
    Json,
}

/// The page asked for and whether it is a `HEAD`; or the refusal.
fn route(head: &[u8]) -> Result<(Page, bool), Response> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.trim_end_matches('\r').split(' ');
    let (method, target, version) = (words.next(), words.next(), words.next());
    let (Some(method), Some(target), Some(version), None) = (method, target, version, words.next()) else {
        return Err(plain("400 Bad Request", "bad request\n"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(plain("400 Bad Request", "bad request\n"));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(plain("405 Method Not Allowed", "read-only: GET or HEAD\n")),
    };
    let path = target.split(['?', '#']).next().unwrap_or_default();
    match path {
        "/" | "/index.html" => Ok((Page::Html, head_only)),
        "/status.json" => Ok((Page::Json, head_only)),
        _ => Err(plain("404 Not Found", "not found: try / or /status.json\n")),
    }
}

/// Whether the request's `Host` is a loopback address or `localhost` (or
/// missing: no browser leaves it out).
fn to_loopback(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let host = text.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("host").then(|| value.trim().to_ascii_lowercase())
    });
    let Some(host) = host else { return true };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn plain(status: &'static str, text: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: text.as_bytes().to_vec(),
        head_only: false,
    }
}

/// The response's bytes: the page may not be framed, scripted or sniffed.
fn encode(r: &Response) -> Vec<u8> {
    let allow = if r.status.starts_with("405") { "Allow: GET, HEAD\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'\r\n\
         X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    let mut out = head.into_bytes();
    if !r.head_only {
        out.extend_from_slice(&r.body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(head: &str) -> String {
        match route(head.as_bytes()) {
            Ok((page, head_only)) => format!("{page:?} {head_only}"),
            Err(r) => r.status.to_string(),
        }
    }

    #[test]
    fn only_reads_of_the_two_pages_are_answered() {
        assert_eq!(status_of("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "Html false");
        assert_eq!(status_of("GET /?refresh=1 HTTP/1.1\r\n\r\n"), "Html false");
        assert_eq!(status_of("HEAD /status.json HTTP/1.0\r\n\r\n"), "Json true");
        assert_eq!(status_of("POST / HTTP/1.1\r\n\r\n"), "405 Method Not Allowed");
        assert_eq!(status_of("DELETE /status.json HTTP/1.1\r\n\r\n"), "405 Method Not Allowed");
        assert_eq!(status_of("GET /../../etc/passwd HTTP/1.1\r\n\r\n"), "404 Not Found");
        assert_eq!(status_of("GET / SMTP\r\n\r\n"), "400 Bad Request");
        assert_eq!(status_of("GET /\r\n\r\n"), "400 Bad Request");
        assert_eq!(status_of("\u{0}\u{ff}"), "400 Bad Request");
        assert_eq!(status_of(""), "400 Bad Request");
    }

    #[test]
    fn on_loopback_only_loopback_names_are_answered() {
        let host = |h: &str| to_loopback(format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n").as_bytes());
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.0.0.2"] {
            assert!(host(ok), "{ok}");
        }
        for bad in ["evil.example:8080", "192.168.1.10:8080", "[fe80::1]:80", "localhost.evil.example"] {
            assert!(!host(bad), "{bad}");
        }
        assert!(to_loopback(b"GET / HTTP/1.0\r\n\r\n"), "no Host");
    }

    #[test]
    fn responses_are_framed_and_locked_down() {
        let r = plain("405 Method Not Allowed", "no\n");
        let text = String::from_utf8(encode(&r)).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{text}");
        assert!(text.contains("Allow: GET, HEAD\r\n") && text.contains("Content-Length: 3\r\n"), "{text}");
        assert!(text.contains("default-src 'none'") && text.ends_with("\r\n\r\nno\n"), "{text}");
        let head =
            String::from_utf8(encode(&Response { head_only: true, ..plain("200 OK", "body") })).unwrap();
        assert!(head.contains("Content-Length: 4\r\n") && head.ends_with("\r\n\r\n"), "{head}");
    }
}
