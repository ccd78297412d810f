//! Every limit and interval of a proc, with defaults.

use crate::auth::Cookie;
use crate::frame::DEFAULT_MAX_FRAME_LEN;
use crate::time::Duration;

/// Limits and timings of a proc and its sessions. Both ends of a link should agree on
/// `max_frame_len`; the smaller of the two is enforced (learned at the handshake).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Largest frame body sent or accepted. A message whose envelope exceeds it fails at
    /// its sender with `TooLarge`.
    pub max_frame_len: u32,
    /// Unacknowledged bytes one outbound link may hold before sends are told to wait.
    /// A single message larger than this is still taken when the link holds nothing else.
    pub window_bytes: usize,
    /// Unacknowledged messages one outbound link may hold.
    pub window_msgs: usize,
    /// Messages a port's queue holds (delivered, not yet taken by the driver) before
    /// further deliveries to it wait; see `Proc::handle_consumed`.
    pub port_queue_msgs: usize,
    /// Payload bytes a port's queue holds before further deliveries wait. An empty port
    /// always takes one message, however large.
    pub port_queue_bytes: usize,
    /// Messages an inbound link holds, unacknowledged, behind a full port. A peer that
    /// sends more than this while the link waits has its connection closed
    /// (`ConnError::Overrun`) and resumes later from the first message not delivered.
    pub link_held_msgs: usize,
    /// Bytes an inbound link holds behind a full port (same rule).
    pub link_held_bytes: usize,
    /// The receiver acknowledges after this many messages...
    pub ack_every_msgs: u64,
    /// ...or this many bytes...
    pub ack_every_bytes: usize,
    /// ...or this long after the first unacknowledged message, whichever comes first.
    pub ack_delay: Duration,
    /// A dialer pings this often on an open connection, and the acceptor answers; the
    /// acceptor sends a keepalive of its own only when it answered no ping for this long.
    /// The default (2 s) is a fifth of `idle_timeout`, so a link survives four lost
    /// heartbeats; an idle link costs one small frame each way per interval, which with
    /// thousands of links is what an idle proc spends its CPU on.
    pub heartbeat_interval: Duration,
    /// A connection on which nothing at all arrived for this long is closed. Any byte
    /// counts, so a slowly arriving large frame keeps the link alive.
    pub idle_timeout: Duration,
    /// Dial plus handshake must complete within this.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt...
    pub backoff_base: Duration,
    /// ...up to this.
    pub backoff_max: Duration,
    /// Up to this many percent of the delay are added at random (from the proc's seed).
    pub backoff_jitter_pct: u64,
    /// With messages waiting, a peer that cannot be (re)connected for this long is given
    /// up: everything for it returns, as `Unreachable` if it was never transmitted and as
    /// `Unconfirmed` if it was.
    pub unreachable_timeout: Duration,
    /// A receiver keeps a disconnected session's position this long for the dialer to
    /// resume.
    pub session_retention: Duration,
    /// Inbound sessions one proc keeps at most. A dialing proc holds one (a new session
    /// from it replaces its old one); when the table is full, the session that has been
    /// disconnected longest is evicted for a new dialer (its dialer learns on resume and
    /// returns what it cannot prove delivered as `SessionLost`); only when every session is
    /// connected is a new dialer refused with `TooManySessions`.
    pub max_inbound_sessions: usize,
    /// Graceful shutdown waits this long for acknowledgements, then returns the rest.
    pub shutdown_timeout: Duration,
    /// Control frames for one connection are coalesced into writes of up to this many bytes.
    pub coalesce_bytes: usize,
    /// Data frames of an outbound link are encoded into chunks of this many bytes (a larger
    /// frame gets a chunk of its own); a chunk is written as it is and kept for
    /// retransmission until its last frame is acknowledged.
    pub chunk_bytes: usize,
    /// Full data-path buffers (a link's chunks, a connection's receive buffer, the
    /// control-frame buffer) each user keeps, to reuse once every slice of them is dropped
    /// (see `recycle`): at most this many blocks per user beyond the one being filled.
    /// With 0, a full buffer is always replaced by a new allocation.
    pub spare_buffers: usize,
    /// Pairs of actor ids (sender, destination actor) the proc keeps from envelopes the
    /// driver hands back with `Proc::recycle`, to reuse for the next messages between
    /// the same actors (see `idcache::IdSpares`). With 0, recycling keeps nothing.
    pub recycled_ids: usize,
    /// Actor ids one link caches (see `idcache`): the receiver of a session holds at most
    /// this many, and announces it in the welcome; the sender uses the smaller of the two.
    pub id_cache_entries: u16,
    /// Inbound connections in their handshake (accepted, session not yet established) at
    /// most. When one more is accepted, the oldest of them is closed to make room
    /// (`RefuseReason::HandshakeEvicted`): a peer that opens connections and sends nothing
    /// delays others by at most its share of this, not by the handshake deadline.
    pub max_handshaking: usize,
    /// Inbound connections at most, in their handshake or bound to a session. A connection
    /// accepted beyond it is closed at once (`RefuseReason::TooManyConnections`), after the
    /// oldest handshake was evicted if `max_handshaking` was reached too. The default
    /// leaves room for `max_inbound_sessions` sessions each with its connection, plus
    /// `max_handshaking` handshakes.
    pub max_inbound_conns: usize,
    /// A shared secret both ends of every link must hold (see [`crate::auth`]): it decides
    /// who may open sessions and send; it does not encrypt. With a cookie, the seed and
    /// incarnation passed to `Proc::new` must be unpredictable.
    pub cookie: Option<Cookie>,
    /// Two-way links: an outbound session to a proc that dialed this one opens over that
    /// proc's connection instead of dialing one of its own, so both directions of the link
    /// share one connection (and, over TCP, each direction's acknowledgements ride the
    /// other's data). Without a cookie nothing proves that the dialer is the proc its hello
    /// names, so on a network you do not trust set a cookie, or turn this off to always
    /// dial the peer's own address.
    pub two_way: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            window_bytes: 32 * 1024 * 1024,
            window_msgs: 8192,
            port_queue_msgs: 1024,
            port_queue_bytes: 16 * 1024 * 1024,
            link_held_msgs: 8192,
            link_held_bytes: 32 * 1024 * 1024,
            ack_every_msgs: 128,
            ack_every_bytes: 1024 * 1024,
            ack_delay: Duration::from_millis(2),
            heartbeat_interval: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_secs(1),
            backoff_jitter_pct: 25,
            unreachable_timeout: Duration::from_secs(30),
            session_retention: Duration::from_secs(300),
            max_inbound_sessions: 4096,
            shutdown_timeout: Duration::from_secs(5),
            coalesce_bytes: 64 * 1024,
            chunk_bytes: 64 * 1024,
            spare_buffers: 2,
            recycled_ids: 256,
            id_cache_entries: 256,
            max_handshaking: 64,
            max_inbound_conns: 4096 + 64,
            cookie: None,
            two_way: true,
        }
    }
}

impl Config {
    /// The queue limits of every port.
    pub fn port_limits(&self) -> crate::registry::QueueLimits {
        crate::registry::QueueLimits {
            msgs: self.port_queue_msgs,
            bytes: self.port_queue_bytes,
        }
    }
}

/// Delay before reconnect attempt `attempt` (0-based): exponential from `backoff_base`,
/// capped at `backoff_max`, plus up to `backoff_jitter_pct` percent chosen by `jitter`.
/// A pure function of its inputs.
pub fn backoff_delay(config: &Config, attempt: u32, jitter: u64) -> Duration {
    let exp = config
        .backoff_base
        .saturating_mul(1u64 << attempt.min(20))
        .min(config.backoff_max);
    let span = exp.as_micros() / 100 * config.backoff_jitter_pct.min(100);
    exp + Duration::from_micros(jitter % (span + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_bounds() {
        let c = Config::default();
        assert_eq!(backoff_delay(&c, 0, 0), Duration::from_millis(5));
        assert_eq!(backoff_delay(&c, 1, 0), Duration::from_millis(10));
        assert_eq!(backoff_delay(&c, 30, 0), Duration::from_secs(1));
        for j in [1u64, 999, u64::MAX] {
            let d = backoff_delay(&c, 30, j);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_millis(1250),
                "{d}"
            );
        }
    }
}
