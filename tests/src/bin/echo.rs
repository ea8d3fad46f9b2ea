//! `ferrolb-echo`: the test workload of the `localhost/ferrolb/echo` image (see
//! `ferrolb_tests::image`). It answers every HTTP request with `200` and one line naming the pod,
//! its node and the client address as the pod sees it:
//!
//! ```text
//! ferrolb-echo [--listen [::]:8080]
//! GET /anything  ->  pod=<$POD_NAME> node=<$NODE_NAME> client=<peer ip>\n
//! GET /healthz   ->  ok\n
//! ```
//!
//! `POD_NAME` and `NODE_NAME` come from the downward API. `client=` is the TCP peer's IP, an
//! IPv4-mapped IPv6 address written as plain IPv4: with `externalTrafficPolicy: Local` it is the
//! real client's address, with `Cluster` usually a node's (kube-proxy masquerades).
//!
//! `[::]` takes IPv4 connections too (`net.ipv6.bindv6only` is 0 by default). As a container's
//! PID 1 it exits at once on SIGTERM or SIGINT, so deleting its pod does not wait for the grace
//! period. Standard library (and libc for the signals) only; one thread per connection.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/http1.rs"]
mod http1;
#[path = "common/signals.rs"]
mod signals;

use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::Arc;

const USAGE: &str = "usage: ferrolb-echo [--listen <addr:port>]\n\
                     Answers every HTTP request with 200 and `pod=$POD_NAME node=$NODE_NAME client=<peer ip>`,\n\
                     GET /healthz with `ok`. --listen defaults to [::]:8080 (IPv6 and IPv4).";

/// Who this server is: the pod and node names from the environment.
#[derive(Debug)]
struct Identity {
    pod: String,
    node: String,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<String, String> {
    let mut listen = "[::]:8080".to_string();
    let mut flags = cli::Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        match flag.as_str() {
            "--listen" => listen = flags.value(&flag)?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(listen)
}

fn main() {
    let listen = cli::parsed_or_exit("ferrolb-echo", USAGE, parse_args(std::env::args().skip(1)));
    let stop = signals::Blocked::block(&[signals::SIGTERM, signals::SIGINT])
        .unwrap_or_else(|e| fail(&format!("cannot block SIGTERM and SIGINT: {e}")));
    std::thread::spawn(move || {
        let signal = stop.wait().unwrap_or(signals::SIGTERM);
        eprintln!("ferrolb-echo: {}, exiting", signals::name(signal));
        std::process::exit(0);
    });
    let listener = TcpListener::bind(&listen)
        .unwrap_or_else(|e| fail(&format!("cannot listen on {listen}: {e}")));
    let identity = Arc::new(Identity {
        pod: std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into()),
        node: std::env::var("NODE_NAME").unwrap_or_else(|_| "unknown".into()),
    });
    eprintln!(
        "ferrolb-echo: pod={} node={} listening on {}",
        identity.pod,
        identity.node,
        listener.local_addr().map_or(listen, |a| a.to_string())
    );
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let identity = identity.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve(&stream, &identity) {
                        let peer = stream.peer_addr().map(|a| a.to_string());
                        eprintln!(
                            "ferrolb-echo: request from {}: {e}",
                            peer.unwrap_or_default()
                        );
                    }
                });
            }
            Err(e) => eprintln!("ferrolb-echo: accept: {e}"),
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("ferrolb-echo: {message}");
    std::process::exit(1);
}

/// Reads one request and answers it.
fn serve(stream: &TcpStream, identity: &Identity) -> std::io::Result<()> {
    let Some(request) = http1::read_request(stream)? else {
        return Ok(());
    };
    let body = answer(&request, identity, stream.peer_addr()?.ip());
    http1::respond(stream, &request, "200 OK", &body)
}

/// The body for `request` from `peer`.
fn answer(request: &http1::Request, identity: &Identity, peer: IpAddr) -> String {
    if request.path == "/healthz" {
        return "ok\n".to_string();
    }
    format!(
        "pod={} node={} client={}\n",
        identity.pod,
        identity.node,
        peer.to_canonical()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            pod: "echo-7d9f".into(),
            node: "node2".into(),
        }
    }

    fn get(path: &str) -> http1::Request {
        http1::Request {
            method: "GET".into(),
            path: path.into(),
        }
    }

    #[test]
    fn listen_defaults_to_dual_stack_8080() {
        let args = |a: &[&str]| parse_args(a.iter().map(|s| s.to_string()));
        assert_eq!(args(&[]).unwrap(), "[::]:8080");
        assert_eq!(args(&["--listen", "127.0.0.1:0"]).unwrap(), "127.0.0.1:0");
        assert_eq!(args(&["--listen=[::1]:80"]).unwrap(), "[::1]:80");
        assert!(args(&["--listen"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--name", "x"]).unwrap_err().contains("unknown"));
    }

    #[test]
    fn ipv4_mapped_clients_are_shown_as_ipv4() {
        let mapped: IpAddr = "::ffff:198.51.100.100".parse().unwrap();
        assert_eq!(
            answer(&get("/"), &identity(), mapped),
            "pod=echo-7d9f node=node2 client=198.51.100.100\n"
        );
        let v6: IpAddr = "2001:db8:1::100".parse().unwrap();
        assert_eq!(
            answer(&get("/x?y=1"), &identity(), v6),
            "pod=echo-7d9f node=node2 client=2001:db8:1::100\n"
        );
    }

    #[test]
    fn healthz_answers_ok_and_everything_else_names_pod_node_and_client() {
        let (addr, server) =
            http1::testing::server(3, |stream| serve(&stream, &identity()).unwrap());
        for (request, want_body) in [
            ("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "ok\n"),
            (
                "GET /?a=b HTTP/1.1\r\nHost: x\r\n\r\n",
                "pod=echo-7d9f node=node2 client=127.0.0.1\n",
            ),
            (
                "POST /healthz/no HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                "pod=echo-7d9f node=node2 client=127.0.0.1\n",
            ),
        ] {
            let response = http1::testing::exchange(addr, request);
            assert_eq!(
                response.headers["content-length"],
                want_body.len().to_string(),
                "{response:?}"
            );
            assert_eq!(response.body, want_body);
        }
        server.join().unwrap();
    }
}
