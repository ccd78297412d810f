//! `ProcOptions::same_host_tcp_congestion`: what the kernel reports for the sockets of a
//! link between two procs of this process.

use std::os::fd::BorrowedFd;

use procwire_smol::ProcError;

use super::{addr, echo_rounds};
use crate::scenarios::shutdown_both;
use crate::{init_logging, options, Adapter, TestProc};

/// The congestion control of a fresh TCP socket: the system's default.
fn system_congestion() -> String {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    name(&s.tcp_congestion().expect("TCP_CONGESTION"))
}

fn name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .trim_end_matches('\0')
        .to_string()
}

/// The congestion control of every connected TCP socket of this process with an end on
/// `port` (the listener, unconnected, is left out).
fn congestion_on_port(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let entry = entry.expect("fd entry");
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the fd was open a moment ago and is only queried (getsockname,
        // getpeername, getsockopt), never closed or read; if another test's socket closed
        // and the number was reused meanwhile, the queries fail or see another socket,
        // which the port filter leaves out.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let s = socket2::SockRef::from(&fd);
        let ends = s
            .local_addr()
            .ok()
            .and_then(|l| l.as_socket())
            .zip(s.peer_addr().ok().and_then(|p| p.as_socket()));
        let Some((local, peer)) = ends else {
            continue;
        };
        if local.port() == port || peer.port() == port {
            if let Ok(cc) = s.tcp_congestion() {
                found.push(name(&cc));
            }
        }
    }
    found
}

/// Two procs on 127.0.0.1: the dialed and the accepted end of their connection both get
/// the congestion control `same_host_tcp_congestion` names; with `None`, both keep the
/// system's; a name the kernel does not have fails the start with `ProcError::TcpCongestion`.
pub async fn same_host_tcp_gets_the_congestion_control_asked_for<A: Adapter, B: Adapter>(
    aa: &A,
    ba: &B,
) {
    init_logging();
    let system = system_congestion();
    // reno is in every kernel and open to every user; if it is already the system's, ask
    // for cubic (allowed to unprivileged users only where the system allows it).
    let want = if system == "reno" { "cubic" } else { "reno" };
    for (asked, expected) in [(Some(want), want), (None, system.as_str())] {
        let mut o = options();
        o.same_host_tcp_congestion = asked.map(String::from);
        let a = match aa.start(addr("tcp:127.0.0.1:0"), "a", o.clone()).await {
            Err(ProcError::TcpCongestion { name, source }) if name == "cubic" => {
                eprintln!("cubic is not allowed here ({source}): only None was checked");
                continue;
            }
            r => r.expect("a"),
        };
        let b = ba.start(addr("tcp:127.0.0.1:0"), "b", o).await.expect("b");
        echo_rounds(&a, &b).await;
        let port = b.addr().tcp_port().expect("a TCP port");
        let seen = congestion_on_port(port);
        assert_eq!(seen.len(), 2, "the dialed and the accepted end: {seen:?}");
        assert!(
            seen.iter().all(|cc| cc == expected),
            "asked {asked:?}, system {system}: {seen:?}"
        );
        shutdown_both(&a, &b).await;
    }
    let mut o = options();
    o.same_host_tcp_congestion = Some("no-such-cc".into());
    match aa.start(addr("tcp:127.0.0.1:0"), "c", o).await {
        Err(ProcError::TcpCongestion { name, source }) => {
            assert_eq!(name, "no-such-cc");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{source}");
        }
        Err(other) => panic!("another error: {other}"),
        Ok(p) => panic!("started {} with an unknown congestion control", p.proc_id()),
    }
}
