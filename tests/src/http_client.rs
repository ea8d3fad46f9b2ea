//! The one HTTP client of the testbed, the bench and the test workloads' tests: a blocking
//! HTTP/1.1 `GET` on a fresh TCP connection, `Connection: close`, response head parsed by
//! `httparse`, body framed by `Content-Length`, `Transfer-Encoding: chunked` or the end of the
//! connection.
//!
//! ```text
//!  Get::new(addr, "/metrics") [.host(..)] [.timeout(..)] .send()
//!     ──"GET /metrics HTTP/1.1 / Host / Connection: close"──> server
//!     <── head + body ── read until the body is complete (or EOF) ──> Response
//! ```
//!
//! It replaces hand-written exchanges that each parsed a little of HTTP: one spoke HTTP/1.0 and
//! split the status line by hand, another spoke HTTP/1.1 but refused a chunked body, a third
//! asserted on the raw head. Every ferrolb endpoint (hyper) and test workload
//! (`src/bin/common/http1.rs`) speaks HTTP/1.1, so one request shape serves all of them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

/// Headers a response may carry at most.
const MAX_HEADERS: usize = 64;

/// Where an exchange failed: callers that time each stage (the bench's prober) report it.
#[derive(Debug)]
pub enum Error {
    /// The TCP connection (or setting its options).
    Connect(std::io::Error),
    /// Sending the request.
    Write(std::io::Error),
    /// Reading the response (a timeout included).
    Read(std::io::Error),
    /// The bytes read are not a complete HTTP/1.x response.
    Malformed(String),
}

impl Error {
    /// The stage in one word: `connect`, `write`, `read` or `malformed`.
    pub fn stage(&self) -> &'static str {
        match self {
            Error::Connect(_) => "connect",
            Error::Write(_) => "write",
            Error::Read(_) => "read",
            Error::Malformed(_) => "malformed",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "connecting: {e}"),
            Error::Write(e) => write!(f, "sending the request: {e}"),
            Error::Read(e) => write!(f, "reading the response: {e}"),
            Error::Malformed(why) => write!(f, "malformed HTTP response: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// A response read in full.
#[derive(Debug)]
pub struct Response {
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// The status code.
    pub status: StatusCode,
    /// The headers, names lowercased.
    pub headers: HeaderMap,
    /// The body (decoded from chunks if it came chunked), as text (lossy UTF-8).
    pub body: String,
}

impl Response {
    /// The body if the status is 200, else an error that quotes the status and the body's start,
    /// so that an odd answer can be told apart from a missing one.
    pub fn ok_body(self) -> anyhow::Result<String> {
        if self.status != StatusCode::OK {
            anyhow::bail!(
                "answered {} (body starts {:?})",
                self.status,
                cut(&self.body, 300)
            );
        }
        Ok(self.body)
    }
}

/// One `GET`; [`Get::send`] performs it.
#[derive(Clone, Debug)]
pub struct Get<'a> {
    addr: SocketAddr,
    path: &'a str,
    host: Option<&'a str>,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl<'a> Get<'a> {
    /// `GET path` from `addr`, `Host: addr`; 2 s to connect, 5 s per read or write.
    pub fn new(addr: SocketAddr, path: &'a str) -> Self {
        Get {
            addr,
            path,
            host: None,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
        }
    }

    /// Sends `Host: host` instead of the address.
    pub fn host(mut self, host: &'a str) -> Self {
        self.host = Some(host);
        self
    }

    /// Gives up connecting after `connect`, and waiting for any read or write after `io`.
    pub fn timeouts(mut self, connect: Duration, io: Duration) -> Self {
        self.connect_timeout = connect;
        self.io_timeout = io;
        self
    }

    /// Connects, sends the request and reads the whole response.
    pub fn send(&self) -> Result<Response, Error> {
        let mut stream =
            TcpStream::connect_timeout(&self.addr, self.connect_timeout).map_err(Error::Connect)?;
        stream.set_nodelay(true).map_err(Error::Connect)?;
        stream
            .set_read_timeout(Some(self.io_timeout))
            .map_err(Error::Connect)?;
        stream
            .set_write_timeout(Some(self.io_timeout))
            .map_err(Error::Connect)?;
        let host = self
            .host
            .map_or_else(|| self.addr.to_string(), str::to_string);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            self.path
        );
        stream.write_all(request.as_bytes()).map_err(Error::Write)?;
        read_response(&mut stream)
    }
}

/// `GET path` from `addr` with the default timeouts: (status code, body). Any status is `Ok`.
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let response = Get::new(addr, path).send()?;
    Ok((response.status.as_u16(), response.body))
}

/// Reads one response from `stream`, stopping as soon as its body is complete (or at EOF).
pub fn read_response(stream: &mut impl Read) -> Result<Response, Error> {
    let mut bytes = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Read(e)),
        };
        let at_eof = n == 0;
        bytes.extend_from_slice(&chunk[..n]);
        match parse(&bytes, at_eof)? {
            Complete(response) => return Ok(response),
            Partial(_) if !at_eof => {}
            Partial(what) => {
                return Err(Error::Malformed(format!(
                    "{what} (the connection closed after {} bytes)",
                    bytes.len()
                )));
            }
        }
    }
}

/// A response parsed so far.
enum Parsed {
    Complete(Response),
    /// More bytes are needed; what is missing.
    Partial(&'static str),
}
use Parsed::{Complete, Partial};

/// Parses a response; `at_eof` says no more bytes will come, so a body without a length ends
/// here.
fn parse(bytes: &[u8], at_eof: bool) -> Result<Parsed, Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut slots);
    let head_len = match head.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Partial("the head is not complete")),
        Err(e) => return Err(Error::Malformed(format!("{e}: {:?}", lossy_start(bytes)))),
    };
    let version = match head.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let status = head
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| Error::Malformed(format!("bad status in {:?}", lossy_start(bytes))))?;
    let mut headers = HeaderMap::new();
    for h in head.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| Error::Malformed(format!("header {:?}: {e}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|e| Error::Malformed(format!("header {:?}: {e}", h.name)))?;
        headers.append(name, value);
    }
    let rest = &bytes[head_len..];
    let chunked = headers
        .get(http::header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
    let body = if chunked {
        match dechunk(rest)? {
            Some(body) => body,
            None => return Ok(Partial("the chunked body is not complete")),
        }
    } else if let Some(length) = length {
        if rest.len() < length {
            return Ok(Partial("the body is shorter than its Content-Length"));
        }
        rest[..length].to_vec()
    } else if at_eof {
        rest.to_vec()
    } else {
        return Ok(Partial("the body runs to the end of the connection"));
    };
    Ok(Complete(Response {
        version,
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

/// The body of a chunked message, or `None` while its last chunk has not arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let mut body = Vec::new();
    loop {
        let (size, after_size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete((at, size))) => (size, at),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Error::Malformed("bad chunk size".into())),
        };
        if size == 0 {
            return Ok(Some(body));
        }
        let size = usize::try_from(size).map_err(|_| Error::Malformed("huge chunk".into()))?;
        let data = &rest[after_size..];
        // The chunk's data, then CRLF.
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

fn lossy_start(bytes: &[u8]) -> String {
    cut(&String::from_utf8_lossy(bytes), 300).to_string()
}

/// The first `n` bytes of `s`, cut at a character boundary.
fn cut(s: &str, n: usize) -> &str {
    let mut end = s.len().min(n);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Response {
        read_response(&mut text.as_bytes()).unwrap()
    }

    #[test]
    fn a_content_length_body_ends_at_its_length() {
        let r = whole(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\nextra",
        );
        assert_eq!(
            (r.version, r.status, r.body.as_str()),
            (Version::HTTP_11, StatusCode::OK, "ok\n")
        );
        assert_eq!(r.headers["Content-Type"], "text/plain");
        let short = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort";
        assert!(matches!(parse(short.as_bytes(), false), Ok(Partial(_))));
        assert_eq!(
            read_response(&mut short.as_bytes()).unwrap_err().stage(),
            "malformed"
        );
    }

    #[test]
    fn a_chunked_body_is_decoded() {
        let r = whole(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        assert_eq!(r.body, "abcde");
        let cut_short = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab";
        assert!(matches!(
            read_response(&mut cut_short.as_bytes()),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn a_body_without_length_runs_to_the_end_and_status_and_version_are_kept() {
        let r = whole("HTTP/1.0 503 Service Unavailable\r\n\r\nnot ready: caches not synced");
        assert_eq!((r.version, r.status.as_u16()), (Version::HTTP_10, 503));
        assert_eq!(r.body, "not ready: caches not synced");
        let err = r.ok_body().unwrap_err().to_string();
        assert!(err.contains("503") && err.contains("not ready"), "{err}");
    }

    #[test]
    fn garbage_and_a_short_head_are_malformed() {
        for text in ["", "SSH-2.0-OpenSSH\r\n\r\n", "HTTP/1.1 200 OK\r\nHost"] {
            let e = read_response(&mut text.as_bytes()).unwrap_err();
            assert_eq!(e.stage(), "malformed", "{text:?}: {e}");
        }
    }

    #[test]
    fn a_get_reaches_a_server_and_reads_its_answer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (done, client_done) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).unwrap();
                request.push(byte[0]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                .unwrap();
            // The connection stays open until the client has its answer: complete at its
            // length, it must not wait for the close.
            client_done.recv().unwrap();
            String::from_utf8(request).unwrap()
        });
        let response = Get::new(addr, "/healthz").host("echo").send().unwrap();
        done.send(()).unwrap();
        assert_eq!(response.ok_body().unwrap(), "ok\n");
        assert_eq!(
            server.join().unwrap(),
            "GET /healthz HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            Get::new(addr, "/").send().unwrap_err().stage(),
            "connect",
            "nobody listens any more"
        );
    }
}
