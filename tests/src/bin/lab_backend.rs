//! `ferrolb-lab-backend`: the lab's stand-in for a Service's pods. One runs in each node
//! namespace (see `ferrolb_tests::backend`); it answers every HTTP request with `200` and the body
//! `<name>\n`, so `curl http://VIP/` from the client says which node the VIP led to.
//!
//! ```text
//! ferrolb-lab-backend --name node2 [--listen [::]:8080]
//! ```
//!
//! `[::]` takes IPv4 connections too: `net.ipv6.bindv6only` is 0 in a fresh network namespace.
//! Standard library only; one thread per connection, one request per connection.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/http1.rs"]
mod http1;

use std::net::{TcpListener, TcpStream};

const USAGE: &str = "usage: ferrolb-lab-backend --name <name> [--listen <addr:port>]\n\
                     Answers every HTTP request with 200 and the body `<name>\\n`.\n\
                     --listen defaults to [::]:8080 (IPv6 and IPv4).";

#[derive(Debug, PartialEq)]
struct Args {
    name: String,
    listen: String,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut name = None;
    let mut listen = "[::]:8080".to_string();
    let mut flags = cli::Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        match flag.as_str() {
            "--name" => name = Some(flags.value(&flag)?),
            "--listen" => listen = flags.value(&flag)?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let name = name.ok_or("--name is required")?;
    Ok(Args { name, listen })
}

fn main() {
    let args = cli::parsed_or_exit(
        "ferrolb-lab-backend",
        USAGE,
        parse_args(std::env::args().skip(1)),
    );
    let listener = match TcpListener::bind(&args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ferrolb-lab-backend: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    eprintln!(
        "ferrolb-lab-backend {}: listening on {}",
        args.name, args.listen
    );
    let body: std::sync::Arc<str> = format!("{}\n", args.name).into();
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let body = body.clone();
                std::thread::spawn(move || {
                    let peer = stream.peer_addr().map(|a| a.to_string());
                    if let Err(e) = serve(stream, &body) {
                        eprintln!(
                            "ferrolb-lab-backend: request from {}: {e}",
                            peer.unwrap_or_default()
                        );
                    }
                });
            }
            Err(e) => eprintln!("ferrolb-lab-backend: accept: {e}"),
        }
    }
}

/// Reads one request and answers it.
fn serve(stream: TcpStream, body: &str) -> std::io::Result<()> {
    match http1::read_request(&stream)? {
        Some(request) => http1::respond(&stream, &request, "200 OK", body),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, String> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn name_is_required_and_listen_defaults_to_dual_stack_8080() {
        assert_eq!(
            args(&["--name", "node2"]).unwrap(),
            Args {
                name: "node2".into(),
                listen: "[::]:8080".into()
            }
        );
        assert_eq!(
            args(&["--name=node3", "--listen=127.0.0.1:0"]).unwrap(),
            Args {
                name: "node3".into(),
                listen: "127.0.0.1:0".into()
            }
        );
        assert!(args(&[]).unwrap_err().contains("--name"));
        assert!(args(&["--name"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--port", "1"]).unwrap_err().contains("unknown"));
    }

    #[test]
    fn every_request_gets_200_and_the_name() {
        let (addr, server) = http1::testing::server(2, |stream| serve(stream, "node7\n").unwrap());
        for (request, want_body) in [
            ("GET /anything HTTP/1.1\r\nHost: x\r\n\r\n", "node7\n"),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                "node7\n",
            ),
        ] {
            let response = http1::testing::exchange(addr, request);
            assert_eq!(response.headers["content-length"], "6", "{response:?}");
            assert_eq!(response.body, want_body);
        }
        server.join().unwrap();
    }
}
