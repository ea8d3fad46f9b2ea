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
//! It stops after `--for-s` seconds or when killed. Each attempt is one
//! [`ferrolb_tests::http_client::Get`] with the timeout for every stage.

#[path = "common/cli.rs"]
mod cli;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrolb_tests::http_client::{Error, Get};

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
    let mut flags = cli::Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: {v:?} is not a whole number"))
        };
        match flag.as_str() {
            "--target" => {
                let v = flags.value(&flag)?;
                target = Some(
                    v.parse()
                        .map_err(|_| format!("--target: {v:?} is not an ip:port"))?,
                );
            }
            "--timeout-ms" => {
                timeout = Duration::from_millis(number(flags.value(&flag)?)?.max(1));
            }
            "--pause-ms" => pause = Duration::from_millis(number(flags.value(&flag)?)?),
            "--for-s" => run_for = Duration::from_secs(number(flags.value(&flag)?)?),
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
    let host = target.ip().to_string();
    let response = Get::new(target, "/")
        .host(&host)
        .timeouts(timeout, timeout)
        .send()
        .map_err(|e| match e {
            Error::Malformed(_) => "empty",
            e => e.stage(),
        })?;
    let first = response.body.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        return Err("empty");
    }
    Ok(first.split_whitespace().collect::<Vec<_>>().join("_"))
}

fn main() {
    let args = cli::parsed_or_exit(
        "ferrolb-bench-prober",
        USAGE,
        parse_args(std::env::args().skip(1)),
    );
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
