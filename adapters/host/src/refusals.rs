//! Inbound connections a proc refused or closed for misbehaving: counted per reason, and
//! logged at most once per interval per reason with the count since the previous line.
//!
//! Anyone who can reach a proc's address can open connections that go nowhere: garbage
//! bytes, an HTTP request, a wrong version, a hello for another proc, or nothing at all
//! until the handshake deadline. Logging each of them would let a peer flood the logs, so
//! [`RefusalLog`] keeps the counts ([`Refusals`], readable from the proc handle) and says
//! when a line is due. It reads no clock: the driver passes its hooks' `now`.
//!
//! Core reports both kinds as events: a connection it closes for an error as
//! `Event::ConnectionFailed`, a session it refuses (and a connection it closes under its
//! connection limits) as `Event::Refused`; the driver counts each inbound one here.

use std::fmt;

use procwire_core::envelope::RefuseReason;
use procwire_core::frame::FrameError;
use procwire_core::proc::ConnError;
use procwire_core::time::{Duration, Instant};

/// Why an inbound connection was refused or closed before it did any good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The stream did not start with the protocol's magic (garbage, another protocol).
    BadMagic,
    /// The peer announced a protocol version this proc does not speak.
    UnsupportedVersion,
    /// A frame kind byte that does not exist.
    UnknownFrameKind,
    /// A frame announced a body over the limit in force.
    FrameTooLarge,
    /// A data frame did not hold a valid envelope.
    BadEnvelope,
    /// A frame that makes no sense at that point (e.g. data before a hello).
    ProtocolViolation,
    /// The handshake did not complete within `connect_timeout`.
    HandshakeTimeout,
    /// Nothing arrived for the idle timeout.
    IdleTimeout,
    /// The hello named another proc.
    WrongProc,
    /// The hello could not be decoded.
    BadHello,
    /// The proc already holds `max_inbound_sessions` sessions.
    TooManySessions,
    /// The proc was shutting down.
    ShuttingDown,
    /// This proc could not encode a control frame for the connection (not the peer's fault).
    LocalEncode,
    /// The peer sent more than a link holds while a destination port was full.
    Overrun,
    /// This proc requires a cookie; the peer authenticated with none.
    AuthRequired,
    /// The peer authenticates with a cookie; this proc has none.
    AuthUnexpected,
    /// The peer's cookie proof did not match (a wrong cookie, or a replayed handshake).
    BadAuth,
    /// The proc held `max_inbound_conns` connections; this one was closed at accept.
    TooManyConnections,
    /// `max_handshaking` connections were in their handshake; this, the oldest, was closed.
    HandshakeEvicted,
    /// A reason from a newer core that this host does not name yet.
    Other,
}

/// Number of [`RefusalReason`]s.
const REASONS: usize = 20;

impl RefusalReason {
    /// Every reason, in counter order.
    pub const ALL: [RefusalReason; REASONS] = [
        RefusalReason::BadMagic,
        RefusalReason::UnsupportedVersion,
        RefusalReason::UnknownFrameKind,
        RefusalReason::FrameTooLarge,
        RefusalReason::BadEnvelope,
        RefusalReason::ProtocolViolation,
        RefusalReason::HandshakeTimeout,
        RefusalReason::IdleTimeout,
        RefusalReason::WrongProc,
        RefusalReason::BadHello,
        RefusalReason::TooManySessions,
        RefusalReason::ShuttingDown,
        RefusalReason::LocalEncode,
        RefusalReason::Overrun,
        RefusalReason::AuthRequired,
        RefusalReason::AuthUnexpected,
        RefusalReason::BadAuth,
        RefusalReason::TooManyConnections,
        RefusalReason::HandshakeEvicted,
        RefusalReason::Other,
    ];

    /// A short stable name for logs and metrics (`bad_magic`, `handshake_timeout`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::BadMagic => "bad_magic",
            RefusalReason::UnsupportedVersion => "unsupported_version",
            RefusalReason::UnknownFrameKind => "unknown_frame_kind",
            RefusalReason::FrameTooLarge => "frame_too_large",
            RefusalReason::BadEnvelope => "bad_envelope",
            RefusalReason::ProtocolViolation => "protocol_violation",
            RefusalReason::HandshakeTimeout => "handshake_timeout",
            RefusalReason::IdleTimeout => "idle_timeout",
            RefusalReason::WrongProc => "wrong_proc",
            RefusalReason::BadHello => "bad_hello",
            RefusalReason::TooManySessions => "too_many_sessions",
            RefusalReason::ShuttingDown => "shutting_down",
            RefusalReason::LocalEncode => "local_encode",
            RefusalReason::Overrun => "overrun",
            RefusalReason::AuthRequired => "auth_required",
            RefusalReason::AuthUnexpected => "auth_unexpected",
            RefusalReason::BadAuth => "bad_auth",
            RefusalReason::TooManyConnections => "too_many_connections",
            RefusalReason::HandshakeEvicted => "handshake_evicted",
            RefusalReason::Other => "other",
        }
    }

    /// The reason for a connection core closed with `error`.
    pub fn from_conn_error(error: &ConnError) -> RefusalReason {
        match error {
            ConnError::Frame(FrameError::BadMagic(_)) => RefusalReason::BadMagic,
            ConnError::Frame(FrameError::UnsupportedVersion { .. }) => {
                RefusalReason::UnsupportedVersion
            }
            ConnError::Frame(FrameError::UnknownKind(_)) => RefusalReason::UnknownFrameKind,
            ConnError::Frame(FrameError::TooLarge { .. }) => RefusalReason::FrameTooLarge,
            ConnError::Envelope(_) => RefusalReason::BadEnvelope,
            ConnError::Protocol(_) => RefusalReason::ProtocolViolation,
            ConnError::Refused(r) => RefusalReason::from_refuse(r),
            ConnError::HandshakeTimeout => RefusalReason::HandshakeTimeout,
            ConnError::IdleTimeout => RefusalReason::IdleTimeout,
            ConnError::Encode => RefusalReason::LocalEncode,
            ConnError::Overrun => RefusalReason::Overrun,
            ConnError::Auth(_) => RefusalReason::BadAuth,
            _ => RefusalReason::Other,
        }
    }

    /// The reason for a session refused with `reason`.
    pub fn from_refuse(reason: &RefuseReason) -> RefusalReason {
        match reason {
            RefuseReason::WrongProc => RefusalReason::WrongProc,
            RefuseReason::UnsupportedVersion { .. } => RefusalReason::UnsupportedVersion,
            RefuseReason::ShuttingDown => RefusalReason::ShuttingDown,
            RefuseReason::BadHello => RefusalReason::BadHello,
            RefuseReason::TooManySessions => RefusalReason::TooManySessions,
            RefuseReason::AuthRequired => RefusalReason::AuthRequired,
            RefuseReason::AuthUnexpected => RefusalReason::AuthUnexpected,
            RefuseReason::BadAuth => RefusalReason::BadAuth,
            RefuseReason::TooManyConnections => RefusalReason::TooManyConnections,
            RefuseReason::HandshakeEvicted => RefusalReason::HandshakeEvicted,
            _ => RefusalReason::Other,
        }
    }

    fn index(self) -> usize {
        RefusalReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(0)
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Refused or failed inbound connections since the proc started, per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    counts: [u64; REASONS],
}

impl Refusals {
    /// Connections refused or closed for `reason`.
    pub fn get(&self, reason: RefusalReason) -> u64 {
        self.counts[reason.index()]
    }

    /// All of them, whatever the reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Every reason with its count (zeros included), in [`RefusalReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (RefusalReason, u64)> + '_ {
        RefusalReason::ALL
            .into_iter()
            .zip(self.counts.iter().copied())
    }

    fn bump(&mut self, reason: RefusalReason) -> u64 {
        let c = &mut self.counts[reason.index()];
        *c = c.saturating_add(1);
        *c
    }
}

impl fmt::Display for Refusals {
    /// The non-zero counts, as `bad_magic=3 handshake_timeout=1` (`none` if all are zero).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for (reason, n) in self.iter().filter(|(_, n)| *n > 0) {
            if any {
                f.write_str(" ")?;
            }
            write!(f, "{reason}={n}")?;
            any = true;
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// One log line that is due: `count` refusals for `reason` since the previous line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogLine {
    pub(crate) reason: RefusalReason,
    /// Since the previous line for this reason.
    pub(crate) count: u64,
    /// Since the proc started.
    pub(crate) total: u64,
}

/// Per reason: when its last line went out, and how many came since.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    last_line: Option<Instant>,
    since: u64,
}

/// Counts refusals and decides when a line per reason is due: the first refusal of a
/// reason logs at once; later ones are only counted until `interval` has passed since that
/// reason's last line, and the next line carries the count since then.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    interval: Duration,
    totals: Refusals,
    slots: [Slot; REASONS],
}

impl RefusalLog {
    pub(crate) fn new(interval: Duration) -> Self {
        RefusalLog {
            interval,
            totals: Refusals::default(),
            slots: [Slot::default(); REASONS],
        }
    }

    /// Counts one refusal for `reason` at `now`; returns the lines due now (this reason's,
    /// and any other reason's whose interval has passed with refusals pending).
    pub(crate) fn record(&mut self, now: Instant, reason: RefusalReason) -> Vec<LogLine> {
        self.totals.bump(reason);
        self.slots[reason.index()].since += 1;
        self.due(now)
    }

    /// The lines due at `now`, marked as logged.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<LogLine> {
        let interval = self.interval;
        self.take_lines(
            |slot| slot.last_line.is_none_or(|t| now >= t + interval),
            now,
        )
    }

    /// Every pending count as a line, due or not (when the proc stops).
    pub(crate) fn flush(&mut self, now: Instant) -> Vec<LogLine> {
        self.take_lines(|_| true, now)
    }

    /// The counts so far.
    pub(crate) fn counts(&self) -> Refusals {
        self.totals
    }

    fn take_lines(&mut self, due: impl Fn(&Slot) -> bool, now: Instant) -> Vec<LogLine> {
        let mut lines = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.since > 0 && due(slot) {
                let reason = RefusalReason::ALL[i];
                lines.push(LogLine {
                    reason,
                    count: slot.since,
                    total: self.totals.get(reason),
                });
                slot.since = 0;
                slot.last_line = Some(now);
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwire_core::proc::Violation;

    fn at(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    fn line(reason: RefusalReason, count: u64, total: u64) -> LogLine {
        LogLine {
            reason,
            count,
            total,
        }
    }

    fn log() -> RefusalLog {
        RefusalLog::new(Duration::from_secs(10))
    }

    #[test]
    fn the_first_refusal_logs_at_once_and_a_burst_only_counts() {
        let mut l = log();
        let bad = RefusalReason::BadMagic;
        assert_eq!(l.record(at(100), bad), vec![line(bad, 1, 1)]);
        for s in 101..110 {
            assert!(l.record(at(s), bad).is_empty(), "second {s}");
        }
        assert_eq!(l.counts().get(bad), 10);
        // The interval has passed: the next refusal logs the nine before it and itself.
        assert_eq!(l.record(at(110), bad), vec![line(bad, 10, 11)]);
        assert_eq!(l.counts().get(bad), 11);
        assert_eq!(l.counts().total(), 11);
    }

    #[test]
    fn reasons_are_limited_independently() {
        let mut l = log();
        let (a, b) = (RefusalReason::HandshakeTimeout, RefusalReason::WrongProc);
        assert_eq!(l.record(at(0), a), vec![line(a, 1, 1)]);
        assert_eq!(l.record(at(1), b), vec![line(b, 1, 1)]);
        assert!(l.record(at(2), a).is_empty());
        assert!(l.record(at(3), b).is_empty());
        assert_eq!(l.counts().get(a), 2);
        assert_eq!(l.counts().get(b), 2);
        assert_eq!(l.counts().get(RefusalReason::BadMagic), 0);
    }

    #[test]
    fn a_refusal_of_one_reason_brings_out_the_pending_lines_of_others() {
        let mut l = log();
        let (a, b) = (RefusalReason::BadMagic, RefusalReason::FrameTooLarge);
        l.record(at(0), a);
        l.record(at(1), a);
        l.record(at(2), a);
        // `a` has two pending; at 10 s they are due, and `b`'s first line goes out with them.
        assert_eq!(l.record(at(10), b), vec![line(a, 2, 3), line(b, 1, 1)]);
    }

    #[test]
    fn due_reports_pending_counts_only_after_the_interval() {
        let mut l = log();
        let a = RefusalReason::IdleTimeout;
        l.record(at(0), a);
        l.record(at(5), a);
        assert!(l.due(at(9)).is_empty());
        assert_eq!(l.due(at(10)), vec![line(a, 1, 2)]);
        assert!(l.due(at(100)).is_empty(), "nothing pending");
        // The line at 10 s restarts the interval.
        l.record(at(15), a);
        assert!(l.due(at(19)).is_empty());
        assert_eq!(l.due(at(20)), vec![line(a, 1, 3)]);
    }

    #[test]
    fn flush_reports_everything_pending_whatever_the_time() {
        let mut l = log();
        let a = RefusalReason::BadHello;
        l.record(at(0), a);
        l.record(at(1), a);
        assert_eq!(l.flush(at(1)), vec![line(a, 1, 2)]);
        assert!(l.flush(at(1)).is_empty());
    }

    #[test]
    fn a_zero_interval_logs_every_refusal() {
        let mut l = RefusalLog::new(Duration::from_micros(0));
        let a = RefusalReason::BadMagic;
        assert_eq!(l.record(at(0), a), vec![line(a, 1, 1)]);
        assert_eq!(l.record(at(0), a), vec![line(a, 1, 2)]);
    }

    #[test]
    fn core_errors_map_to_reasons() {
        let cases = [
            (
                ConnError::Frame(FrameError::BadMagic(*b"GET ")),
                RefusalReason::BadMagic,
            ),
            (
                ConnError::Frame(FrameError::UnsupportedVersion {
                    got: 9,
                    supported: 1,
                }),
                RefusalReason::UnsupportedVersion,
            ),
            (
                ConnError::Frame(FrameError::UnknownKind(200)),
                RefusalReason::UnknownFrameKind,
            ),
            (
                ConnError::Frame(FrameError::TooLarge { len: 9, max: 1 }),
                RefusalReason::FrameTooLarge,
            ),
            (
                ConnError::Protocol(Violation::MalformedAck),
                RefusalReason::ProtocolViolation,
            ),
            (ConnError::Encode, RefusalReason::LocalEncode),
            (ConnError::HandshakeTimeout, RefusalReason::HandshakeTimeout),
            (ConnError::IdleTimeout, RefusalReason::IdleTimeout),
            (
                ConnError::Refused(RefuseReason::TooManySessions),
                RefusalReason::TooManySessions,
            ),
        ];
        for (error, reason) in cases {
            assert_eq!(RefusalReason::from_conn_error(&error), reason, "{error}");
        }
    }

    #[test]
    fn counts_display_and_iterate_in_order() {
        let mut l = log();
        assert_eq!(l.counts().to_string(), "none");
        l.record(at(0), RefusalReason::WrongProc);
        l.record(at(0), RefusalReason::BadMagic);
        l.record(at(0), RefusalReason::BadMagic);
        assert_eq!(l.counts().to_string(), "bad_magic=2 wrong_proc=1");
        let all: Vec<_> = l.counts().iter().collect();
        assert_eq!(all.len(), RefusalReason::ALL.len());
        assert_eq!(all[0], (RefusalReason::BadMagic, 2));
        let names: std::collections::HashSet<_> =
            RefusalReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), RefusalReason::ALL.len(), "names are distinct");
    }
}
