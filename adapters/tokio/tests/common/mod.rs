//! Shared test utilities: options, time bounds, an echo actor, and a fault-injecting proxy.
#![allow(dead_code)]

pub mod proxy;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use procwire_tokio::{
    Actor, ActorError, ActorId, ChannelAddr, ChannelTransport, Context, OncePortRef, PortRef,
    ProcOptions, UnixAddr,
};
use serde::{Deserialize, Serialize};

/// Every transport, for tests that run on each.
pub const TRANSPORTS: [ChannelTransport; 3] = [
    ChannelTransport::Unix,
    ChannelTransport::Tcp,
    ChannelTransport::Local,
];

/// Logs to stderr when `PROCWIRE_LOG` is set (`trace`, `debug`, `info`, `warn`).
pub fn init_logging() {
    let Ok(level) = std::env::var("PROCWIRE_LOG") else {
        return;
    };
    let level = level.parse().unwrap_or(tracing::Level::DEBUG);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_test_writer()
        .try_init();
}

/// Options for tests: frames up to 16 MiB, short shutdown bounds.
pub fn options() -> ProcOptions {
    let mut o = ProcOptions::default();
    o.core.max_frame_len = 16 * 1024 * 1024;
    o.core.shutdown_timeout = Duration::from_secs(3).into();
    o.shutdown_timeout = Duration::from_secs(10);
    o
}

/// Fails the test if `fut` takes longer than `secs` seconds.
pub async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

/// A concrete address of `transport` that nobody uses yet and that can be bound again after
/// its proc is gone (for restart tests).
pub fn fixed_addr(transport: ChannelTransport) -> ChannelAddr {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    match transport {
        ChannelTransport::Tcp => {
            // Let the OS pick a free port, then release it for the proc to bind.
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
            ChannelAddr::Tcp(l.local_addr().expect("probe addr"))
        }
        ChannelTransport::Unix => {
            let path = std::env::temp_dir().join(format!(
                "procwire-test-{}-{n}-{:x}.sock",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0)
            ));
            let _ = std::fs::remove_file(&path);
            ChannelAddr::Unix(
                UnixAddr::path(path.to_str().expect("utf-8 temp dir")).expect("path fits"),
            )
        }
        ChannelTransport::Local => {
            ChannelAddr::Local(1_000_000 + u64::from(std::process::id()) * 1000 + n)
        }
    }
}

/// A payload whose first 8 bytes are `seq` and the rest a pattern derived from it.
pub fn numbered_payload(seq: u64, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len.max(8));
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((8..len).map(|i| (i as u64).wrapping_mul(31).wrapping_add(seq) as u8));
    v.truncate(len.max(8));
    Bytes::from(v)
}

/// Checks a payload made by [`numbered_payload`]; returns its sequence number.
pub fn check_payload(p: &[u8], len: usize) -> u64 {
    assert_eq!(p.len(), len.max(8), "payload length");
    let seq = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
    for (i, b) in p.iter().enumerate().skip(8) {
        assert_eq!(
            *b,
            (i as u64).wrapping_mul(31).wrapping_add(seq) as u8,
            "byte {i} of message {seq}"
        );
    }
    seq
}

/// What the echo actor takes.
#[derive(Serialize, Deserialize, Debug)]
pub enum EchoMsg {
    /// Reply with the same sequence number and payload length.
    Ping {
        seq: u64,
        payload: Vec<u8>,
        reply_to: PortRef<Pong>,
    },
    /// Reply once.
    Once {
        value: u64,
        reply_to: OncePortRef<u64>,
    },
    /// Fail the actor with this text.
    Fail(String),
    /// Panic in the handler.
    Panic,
    /// Stop the actor.
    Stop,
}

/// The echo actor's reply.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct Pong {
    pub seq: u64,
    pub len: usize,
    pub from: ActorId,
}

/// Replies to pings.
#[derive(Default)]
pub struct Echo {
    pub handled: u64,
}

impl Actor for Echo {
    type Message = EchoMsg;

    async fn handle(&mut self, cx: &mut Context, msg: EchoMsg) -> Result<(), ActorError> {
        self.handled += 1;
        match msg {
            EchoMsg::Ping {
                seq,
                payload,
                reply_to,
            } => {
                let pong = Pong {
                    seq,
                    len: payload.len(),
                    from: cx.actor_id().clone(),
                };
                reply_to.send(cx, pong).await?;
            }
            EchoMsg::Once { value, reply_to } => reply_to.send(cx, value).await?,
            EchoMsg::Fail(why) => return Err(ActorError::msg(why)),
            EchoMsg::Panic => panic!("asked to panic"),
            EchoMsg::Stop => cx.stop(),
        }
        Ok(())
    }
}
