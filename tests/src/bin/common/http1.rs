//! One HTTP/1.1 request per connection, standard library only: the request reading and response
//! writing that `ferrolb-lab-backend` and `ferrolb-echo` share (each includes this file with
//! `#[path]`, so neither binary links the testbed library; only their tests do, to read the
//! responses with `ferrolb_tests::http_client`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Bodies of requests longer than this are not read (the tests only send GETs).
const MAX_BODY: u64 = 64 * 1024;

/// What the servers look at in a request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request target without its query string, e.g. `/healthz`.
    pub path: String,
}

/// Reads one request (request line, headers, a `Content-Length` body); `None` when the peer
/// closed the connection without sending one.
pub fn read_request(stream: &TcpStream) -> std::io::Result<Option<Request>> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(None);
    }
    let mut content_length = 0u64;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    // Drain a small body so closing the socket does not reset the connection under the client.
    std::io::copy(
        &mut reader.by_ref().take(content_length.min(MAX_BODY)),
        &mut std::io::sink(),
    )?;
    let mut words = request_line.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let target = words.next().unwrap_or_default();
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(Some(Request { method, path }))
}

/// Writes a `text/plain` response and closes the exchange (`Connection: close`); a `HEAD`
/// request gets the headers only.
pub fn respond(
    mut stream: &TcpStream,
    request: &Request,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if request.method != "HEAD" {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// What the binaries' tests share: a loopback server thread and a raw request whose response
/// the testbed's client reads.
#[cfg(test)]
pub mod testing {
    use std::io::Write;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::thread::JoinHandle;

    use ferrolb_tests::http_client::{Response, read_response};

    /// Listens on a loopback port and hands the next `connections` connections to `serve`.
    pub fn server(
        connections: usize,
        serve: impl Fn(TcpStream) + Send + 'static,
    ) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            for _ in 0..connections {
                serve(listener.accept().unwrap().0);
            }
        });
        (addr, thread)
    }

    /// Sends `request` as is (any method, a body too); returns the response, asserted
    /// `HTTP/1.1 200 OK`.
    pub fn exchange(addr: SocketAddr, request: &str) -> Response {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let response = read_response(&mut stream).unwrap();
        assert_eq!(
            (response.version, response.status),
            (http::Version::HTTP_11, http::StatusCode::OK),
            "{response:?}"
        );
        response
    }
}
