//! `ferrolb-bench-prober`: the client side of `cargo xtask bench`'s failover figure. Run in the
//! lab's client namespace, it requests `http://<target>/` over and over, each attempt a fresh TCP
//! connection with a short timeout, and prints one line per attempt with wall-clock
//! (`CLOCK_REALTIME`) times, so the benchmark can line them up with the instant it killed a
//! speaker or cut a link:
//!
//! ```text
//! ferrolb-bench-prober --target 198.51.100.200:80 [--timeout-ms 20] [--pause-ms 1] [--for-s 60]
//! <start µs since epoch> <end µs> ok <body's first line>      (the lab backend names its node)
//! <start µs since epoch> <end µs> err <connect|write|read|empty>
//! ```
//!
//! It stops after `--for-s` seconds or when killed. Standard library only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: ferrolb-bench-prober --target <ip:port> [--timeout-ms 20] [--pause-ms 1] [--for-s 60]\n\
                     Prints `<start µs> <end µs> ok <body>` or `<start µs> <end µs> err <stage>` per attempt.";

#[derive(Debug, PartialEq)]
struct Args {
    target: SocketAddr,
    timeout: Duration,
    pause: Duration,
    run_for: Duration,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut target = None;
    let mut timeout = Duration::from_millis(20);
    let mut pause = Duration::from_millis(1);
    let mut run_for = Duration::from_secs(60);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg, None),
        };
        let mut value = |flag: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let number = |flag: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: {v:?} is not a whole number"))
        };
        match flag.as_str() {
            "--target" => {
                let v = value("--target")?;
                target = Some(
                    v.parse()
                        .map_err(|_| format!("--target: {v:?} is not an ip:port"))?,
                );
            }
            "--timeout-ms" => {
                timeout = Duration::from_millis(number(&flag, value(&flag)?)?.max(1));
            }
            "--pause-ms" => pause = Duration::from_millis(number(&flag, value(&flag)?)?),
            "--for-s" => run_for = Duration::from_secs(number(&flag, value(&flag)?)?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        target: target.ok_or("--target is required")?,
        timeout,
        pause,
        run_for,
    })
}

/// Microseconds since the epoch, `CLOCK_REALTIME`.
fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// One request: `Ok(first line of the body)` or `Err(stage that failed)`.
fn attempt(target: SocketAddr, timeout: Duration) -> Result<String, &'static str> {
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(|_| "connect")?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|_| "connect")?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|_| "connect")?;
    write!(stream, "GET / HTTP/1.0\r\nHost: {}\r\n\r\n", target.ip()).map_err(|_| "write")?;
    let mut response = Vec::with_capacity(256);
    stream
        .take(64 * 1024)
        .read_to_end(&mut response)
        .map_err(|_| "read")?;
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let first = body.lines().next().unwrap_or("").trim();
    if !text.starts_with("HTTP/1.") || first.is_empty() {
        return Err("empty");
    }
    Ok(first.split_whitespace().collect::<Vec<_>>().join("_"))
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("ferrolb-bench-prober: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let stdout = std::io::stdout();
    while started.elapsed() < args.run_for {
        let start = now_us();
        let result = attempt(args.target, args.timeout);
        let end = now_us();
        let line = match &result {
            Ok(body) => format!("{start} {end} ok {body}"),
            Err(stage) => format!("{start} {end} err {stage}"),
        };
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // The reader is gone: nobody wants more lines.
            return;
        }
        drop(out);
        if result.is_ok() && !args.pause.is_zero() {
            std::thread::sleep(args.pause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_have_short_defaults() {
        let args = parse_args(strings(&["--target", "198.51.100.200:80"])).unwrap();
        assert_eq!(args.target, "198.51.100.200:80".parse().unwrap());
        assert_eq!(args.timeout, Duration::from_millis(20));
        assert_eq!(args.pause, Duration::from_millis(1));
        let args = parse_args(strings(&[
            "--target=[2001:db8:1::200]:80",
            "--timeout-ms=50",
            "--for-s",
            "5",
        ]))
        .unwrap();
        assert_eq!(args.timeout, Duration::from_millis(50));
        assert_eq!(args.run_for, Duration::from_secs(5));
        assert!(parse_args(strings(&[])).is_err());
        assert!(parse_args(strings(&["--target", "nowhere"])).is_err());
    }
}
