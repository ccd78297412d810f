//! Link events for users: what happens to this proc's links to its peers, built in the host
//! from what core reports ([`Event`]s) and what the host sees of its own dials and sockets.
//!
//! The public API is [`LinkEvent`] (whose docs say what is reported and what is not),
//! [`LinkError`] and the [`LinkEvents`] subscription.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use procwire_core::envelope::RefuseReason;
use procwire_core::id::{ChannelAddr, ProcId};
use procwire_core::proc::{ConnError, ConnId, Event};

use crate::sync::{lock, PushError, Queue};

/// Events a subscriber may hold unread before further ones are dropped (and counted in
/// [`LinkEvents::missed`]).
pub const LINK_EVENT_QUEUE: usize = 4096;

/// Something that happened to one of this proc's links.
///
/// # What is reported, and when
///
/// A proc's link to a peer is the outbound session that carries its messages to that peer
/// (core dials on demand, when there is something to send, and redials after a loss while
/// something is waiting; when the peer has dialed this proc, the link rides that connection
/// instead, and is reported the same way). Subscribers ([`HostedProc::link_events`](crate::HostedProc::link_events),
/// [`Instance::link_events`](crate::Instance::link_events)) see:
///
/// * [`LinkEvent::Connected`]: a session with an incarnation of the peer this proc had not
///   been connected to before (the first connection, or the first after a restart).
/// * [`LinkEvent::Reconnected`]: a session with the same incarnation again, after a loss.
/// * [`LinkEvent::Lost`]: an established connection ended, with why ([`LinkError`]). Core
///   keeps what is unacknowledged and redials while messages wait.
/// * [`LinkEvent::PeerRestarted`]: the peer answered as another incarnation; what was in
///   flight to the old one has come back to its senders as `PeerRestarted`.
/// * [`LinkEvent::Unreachable`]: a dial failed (connect error, timeout, or the connection
///   ended before the handshake completed), with the error. Reported once per run of
///   failures to one address: core retries with backoff, and the next report for that
///   address comes only after a connection to it got through.
/// * [`LinkEvent::SessionRefused`]: the peer refused the session (wrong proc name, shutting
///   down, too many sessions, ...), with its reason.
///
/// Peers also dial this proc to send to it, over sessions of their own. Those are reported
/// apart, so a proc that only receives from a peer hears of it too:
///
/// * [`LinkEvent::InboundConnected`]: a peer's session to this proc got a connection (its
///   hello was accepted: the first time, again after a loss, or from a new incarnation).
/// * [`LinkEvent::InboundLost`]: that connection ended: it failed, either side closed it,
///   or the peer ended the session (a graceful shutdown). A peer that was killed is lost
///   when the OS reports the connection closed, or at core's `idle_timeout`.
///
/// # Known gaps (what core does not say)
///
/// * Inbound sessions report only connected and lost: whether a dialer restarted shows in
///   its incarnation, and nothing is retried from this side (the dialer redials).
/// * Core's `Dial` output names an address, not a proc. Events that come before a
///   connection succeeded ([`LinkEvent::Unreachable`], [`LinkEvent::SessionRefused`]) carry
///   the address, and the peer's id only if this proc learned which proc that address
///   belongs to (an earlier connection to it, or `set_address`). Connections are matched to
///   peers by address; two procs advertising one address would be confused.
/// * A restart core reports carries both incarnations. A restart the host notices itself
///   (a session with a new incarnation without core's event, e.g. after the old session
///   was given up) carries both too.
/// * "Unreachable" here is a failed dial. Core's own give-up after `unreachable_timeout`
///   (which returns waiting messages as `Unreachable`, each carrying the last dial error in
///   `Returned::dial_error`) is core's `Event::Unreachable`; this tracker does not turn it
///   into a link event of its own yet.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// A session with an incarnation of `peer` this proc had not been connected to.
    Connected {
        /// The peer proc.
        peer: ProcId,
        /// Its incarnation.
        incarnation: u64,
    },
    /// A session with the same incarnation of `peer` as before, after a loss.
    Reconnected {
        /// The peer proc.
        peer: ProcId,
        /// Its incarnation (unchanged).
        incarnation: u64,
    },
    /// An established connection to `peer` ended.
    Lost {
        /// The peer proc.
        peer: ProcId,
        /// Why.
        error: LinkError,
    },
    /// `peer` answered as a new incarnation; what was in flight to the old one came back.
    PeerRestarted {
        /// The peer proc.
        peer: ProcId,
        /// The incarnation this proc was connected to before, if any.
        old_incarnation: Option<u64>,
        /// The new one, when known here (see the known gaps above).
        new_incarnation: Option<u64>,
    },
    /// Dialing `addr` failed (the first failure of a run; see above).
    Unreachable {
        /// The address dialed.
        addr: ChannelAddr,
        /// The proc known at that address, if any.
        peer: Option<ProcId>,
        /// The dial's error.
        error: LinkError,
    },
    /// The proc at `addr` refused the session.
    SessionRefused {
        /// The address dialed.
        addr: ChannelAddr,
        /// The proc known at that address, if any.
        peer: Option<ProcId>,
        /// The refusal's reason.
        reason: RefuseReason,
    },
    /// A session `peer` dialed to this proc got a connection.
    InboundConnected {
        /// The dialing proc.
        peer: ProcId,
        /// Its incarnation.
        incarnation: u64,
    },
    /// The connection of a session `peer` dialed to this proc ended.
    InboundLost {
        /// The dialing proc.
        peer: ProcId,
        /// Its incarnation.
        incarnation: u64,
    },
}

impl LinkEvent {
    /// Whether it is about a session a peer dialed to this proc
    /// ([`InboundConnected`](LinkEvent::InboundConnected),
    /// [`InboundLost`](LinkEvent::InboundLost)) rather than one this proc dialed.
    pub fn is_inbound(&self) -> bool {
        matches!(
            self,
            LinkEvent::InboundConnected { .. } | LinkEvent::InboundLost { .. }
        )
    }

    /// The peer the event is about, when known.
    pub fn peer(&self) -> Option<&ProcId> {
        match self {
            LinkEvent::Connected { peer, .. }
            | LinkEvent::Reconnected { peer, .. }
            | LinkEvent::Lost { peer, .. }
            | LinkEvent::PeerRestarted { peer, .. }
            | LinkEvent::InboundConnected { peer, .. }
            | LinkEvent::InboundLost { peer, .. } => Some(peer),
            LinkEvent::Unreachable { peer, .. } | LinkEvent::SessionRefused { peer, .. } => {
                peer.as_ref()
            }
        }
    }
}

impl fmt::Display for LinkEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkEvent::Connected { peer, incarnation } => {
                write!(f, "connected to {peer} (incarnation {incarnation:#x})")
            }
            LinkEvent::Reconnected { peer, incarnation } => {
                write!(f, "reconnected to {peer} (incarnation {incarnation:#x})")
            }
            LinkEvent::Lost { peer, error } => write!(f, "lost {peer}: {error}"),
            LinkEvent::PeerRestarted { peer, .. } => write!(f, "{peer} restarted"),
            LinkEvent::Unreachable { addr, error, .. } => {
                write!(f, "{addr} unreachable: {error}")
            }
            LinkEvent::SessionRefused { addr, reason, .. } => {
                write!(f, "{addr} refused the session: {reason}")
            }
            LinkEvent::InboundConnected { peer, incarnation } => {
                write!(f, "{peer} connected here (incarnation {incarnation:#x})")
            }
            LinkEvent::InboundLost { peer, incarnation } => {
                write!(
                    f,
                    "{peer}'s connection here ended (incarnation {incarnation:#x})"
                )
            }
        }
    }
}

/// Why a connection ended or a dial failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// The operating system reported an error connecting, reading or writing.
    Io {
        /// Its kind.
        kind: io::ErrorKind,
        /// Its text.
        message: String,
    },
    /// The dial did not connect within core's `connect_timeout`.
    DialTimedOut,
    /// The peer closed the connection.
    ClosedByPeer,
    /// Core closed the connection: a protocol error, a handshake or idle timeout, ...
    Conn(ConnError),
    /// This proc closed it (shutting down, or starting a new session).
    ClosedHere,
}

impl LinkError {
    pub(crate) fn io(e: &io::Error) -> Self {
        LinkError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Io { message, .. } => f.write_str(message),
            LinkError::DialTimedOut => f.write_str("dial timed out"),
            LinkError::ClosedByPeer => f.write_str("closed by the peer"),
            LinkError::Conn(e) => write!(f, "{e}"),
            LinkError::ClosedHere => f.write_str("closed by this proc"),
        }
    }
}

impl std::error::Error for LinkError {}

/// A subscription to a proc's [`LinkEvent`]s, from when it was made. Ends (`recv` gives
/// `None`) when the proc stops. Holds at most [`LINK_EVENT_QUEUE`] unread events; further
/// ones are dropped and counted in [`LinkEvents::missed`].
pub struct LinkEvents {
    queue: Arc<Queue<LinkEvent>>,
    missed: Arc<AtomicU64>,
}

impl LinkEvents {
    /// The next event, or `None` once the proc has stopped and every event was taken.
    pub async fn recv(&mut self) -> Option<LinkEvent> {
        self.queue.pop().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<LinkEvent> {
        self.queue.try_pop().ok()
    }

    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<LinkEvent>> {
        self.queue.poll_pop(cx)
    }

    /// Events dropped because this subscriber held [`LINK_EVENT_QUEUE`] unread ones.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

impl Drop for LinkEvents {
    fn drop(&mut self) {
        self.queue.consumer_gone();
    }
}

impl fmt::Debug for LinkEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkEvents({} queued)", self.queue.len())
    }
}

struct Subscriber {
    queue: Arc<Queue<LinkEvent>>,
    missed: Arc<AtomicU64>,
}

/// Where a dialed connection is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DialState {
    /// Connecting.
    Dialing,
    /// Connected; handshake in progress.
    Handshake,
    /// Core reported the session open (its peer is in `Dial::peer`).
    Open,
}

struct Dial {
    addr: ChannelAddr,
    state: DialState,
    peer: Option<ProcId>,
}

#[derive(Default)]
struct State {
    subscribers: Vec<Subscriber>,
    closed: bool,
    dials: HashMap<ConnId, Dial>,
    /// The incarnation of each peer this proc was last connected to.
    incarnations: HashMap<ProcId, u64>,
    /// Peers whose restart was reported already (core's event), until they connect.
    restarted: HashSet<ProcId>,
    /// Where each peer is dialed (its id's address, or `set_address`).
    book: HashMap<ProcId, ChannelAddr>,
    /// Which proc is known at an address.
    at: HashMap<ChannelAddr, ProcId>,
    /// Addresses whose current run of dial failures was reported.
    failing: HashSet<ChannelAddr>,
}

/// The link-event tracker of one proc.
#[derive(Default)]
pub(crate) struct Links {
    state: Mutex<State>,
}

impl Links {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Links::default())
    }

    /// A new subscription (already ended if the proc has stopped).
    pub(crate) fn subscribe(&self) -> LinkEvents {
        let queue = Arc::new(Queue::with_capacity_limit(LINK_EVENT_QUEUE));
        let missed = Arc::new(AtomicU64::new(0));
        let mut st = lock(&self.state);
        if st.closed {
            queue.close();
        } else {
            st.subscribers.push(Subscriber {
                queue: queue.clone(),
                missed: missed.clone(),
            });
        }
        LinkEvents { queue, missed }
    }

    /// The proc stopped: subscriptions end after what they hold.
    pub(crate) fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        for s in st.subscribers.drain(..) {
            s.queue.close();
        }
    }

    /// `set_address` was called: `proc` is dialed at `addr` from now on.
    pub(crate) fn set_address(&self, proc: ProcId, addr: ChannelAddr) {
        let mut st = lock(&self.state);
        st.at.insert(addr.clone(), proc.clone());
        st.book.insert(proc, addr);
    }

    /// Core asked to dial `addr` as `conn`.
    pub(crate) fn dialing(&self, conn: ConnId, addr: ChannelAddr) {
        let mut st = lock(&self.state);
        let peer = st.at.get(&addr).cloned();
        let dial = Dial {
            addr,
            state: DialState::Dialing,
            peer,
        };
        st.dials.insert(conn, dial);
    }

    /// The dial of `conn` connected; the handshake starts.
    pub(crate) fn dial_connected(&self, conn: ConnId) {
        if let Some(d) = lock(&self.state).dials.get_mut(&conn) {
            d.state = DialState::Handshake;
        }
    }

    /// `conn` (dialed or not) ended, or its dial failed, with `error`. Only the first report
    /// for a connection counts.
    pub(crate) fn ended(&self, conn: ConnId, error: LinkError) {
        let mut st = lock(&self.state);
        let Some(dial) = st.dials.remove(&conn) else {
            return;
        };
        match (dial.state, dial.peer, error) {
            (DialState::Open, Some(peer), error) => st.emit(LinkEvent::Lost { peer, error }),
            // Closed here before it opened: a new session or a shutdown, not a failure.
            (_, _, LinkError::ClosedHere) => {}
            (_, peer, LinkError::Conn(ConnError::Refused(reason))) => {
                st.emit(LinkEvent::SessionRefused {
                    addr: dial.addr,
                    peer,
                    reason,
                });
            }
            (_, peer, error) => {
                if st.failing.insert(dial.addr.clone()) {
                    st.emit(LinkEvent::Unreachable {
                        addr: dial.addr,
                        peer,
                        error,
                    });
                }
            }
        }
    }

    /// Core reported `ev`.
    pub(crate) fn core_event(&self, ev: &Event) {
        match ev {
            Event::PeerConnected {
                peer,
                incarnation,
                conn,
            } => self.connected(peer, *incarnation, *conn),
            Event::PeerRestarted {
                peer,
                previous,
                incarnation,
            } => {
                let mut st = lock(&self.state);
                st.restarted.insert(peer.clone());
                st.emit(LinkEvent::PeerRestarted {
                    peer: peer.clone(),
                    old_incarnation: Some(*previous),
                    new_incarnation: Some(*incarnation),
                });
            }
            Event::ConnectionFailed { conn, error } => {
                self.ended(*conn, LinkError::Conn(error.clone()))
            }
            Event::InboundSession {
                peer,
                incarnation,
                connected,
                ..
            } => {
                let (peer, incarnation) = (peer.clone(), *incarnation);
                lock(&self.state).emit(if *connected {
                    LinkEvent::InboundConnected { peer, incarnation }
                } else {
                    LinkEvent::InboundLost { peer, incarnation }
                });
            }
            _ => {}
        }
    }

    /// A session to `peer` opened over `conn`: one this proc dialed, or one the peer
    /// dialed (a two-way link), which from now on is tracked like a dialed one.
    fn connected(&self, peer: &ProcId, incarnation: u64, conn: ConnId) {
        let mut st = lock(&self.state);
        let addr = st.book.get(peer).unwrap_or(peer.addr()).clone();
        st.at.insert(addr.clone(), peer.clone());
        st.failing.remove(&addr);
        let open = Dial {
            addr,
            state: DialState::Open,
            peer: Some(peer.clone()),
        };
        st.dials.insert(conn, open);
        let reported = st.restarted.remove(peer);
        let before = st.incarnations.insert(peer.clone(), incarnation);
        let peer = peer.clone();
        match before {
            Some(old) if old == incarnation => {
                st.emit(LinkEvent::Reconnected { peer, incarnation })
            }
            Some(old) if !reported => {
                st.emit(LinkEvent::PeerRestarted {
                    peer: peer.clone(),
                    old_incarnation: Some(old),
                    new_incarnation: Some(incarnation),
                });
                st.emit(LinkEvent::Connected { peer, incarnation });
            }
            _ => st.emit(LinkEvent::Connected { peer, incarnation }),
        }
    }
}

impl State {
    fn emit(&mut self, ev: LinkEvent) {
        tracing::debug!(event = %ev, "link event");
        self.subscribers.retain(|s| match s.queue.push(ev.clone()) {
            Ok(()) => true,
            Err((_, PushError::Full)) => {
                s.missed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err((_, PushError::Closed)) => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(s: &str) -> ProcId {
        s.parse().expect("proc id")
    }

    fn drain(ev: &mut LinkEvents) -> Vec<LinkEvent> {
        std::iter::from_fn(|| ev.try_recv()).collect()
    }

    #[test]
    fn connect_lose_reconnect_restart() {
        let links = Links::new();
        let mut ev = links.subscribe();
        let b = proc("unix:@b,b");
        links.dialing(ConnId(1), b.addr().clone());
        links.dial_connected(ConnId(1));
        links.core_event(&Event::PeerConnected {
            peer: b.clone(),
            incarnation: 7,
            conn: ConnId(1),
        });
        links.ended(ConnId(1), LinkError::ClosedByPeer);
        links.ended(ConnId(1), LinkError::ClosedHere); // a second report is ignored
        links.dialing(ConnId(2), b.addr().clone());
        links.ended(ConnId(2), LinkError::DialTimedOut);
        links.dialing(ConnId(3), b.addr().clone());
        links.ended(ConnId(3), LinkError::ClosedByPeer); // same run of failures
        links.dialing(ConnId(4), b.addr().clone());
        links.dial_connected(ConnId(4));
        links.core_event(&Event::PeerConnected {
            peer: b.clone(),
            incarnation: 7,
            conn: ConnId(4),
        });
        links.core_event(&Event::PeerRestarted {
            peer: b.clone(),
            previous: 7,
            incarnation: 9,
        });
        links.ended(ConnId(4), LinkError::ClosedHere);
        links.dialing(ConnId(5), b.addr().clone());
        links.dial_connected(ConnId(5));
        links.core_event(&Event::PeerConnected {
            peer: b.clone(),
            incarnation: 9,
            conn: ConnId(5),
        });
        let peer = b.clone();
        assert_eq!(
            drain(&mut ev),
            vec![
                LinkEvent::Connected {
                    peer: peer.clone(),
                    incarnation: 7
                },
                LinkEvent::Lost {
                    peer: peer.clone(),
                    error: LinkError::ClosedByPeer
                },
                LinkEvent::Unreachable {
                    addr: b.addr().clone(),
                    peer: Some(peer.clone()),
                    error: LinkError::DialTimedOut
                },
                LinkEvent::Reconnected {
                    peer: peer.clone(),
                    incarnation: 7
                },
                LinkEvent::PeerRestarted {
                    peer: peer.clone(),
                    old_incarnation: Some(7),
                    new_incarnation: Some(9)
                },
                LinkEvent::Lost {
                    peer: peer.clone(),
                    error: LinkError::ClosedHere
                },
                LinkEvent::Connected {
                    peer,
                    incarnation: 9
                },
            ]
        );
    }

    #[test]
    fn refusals_unknown_peers_and_unnoticed_restarts() {
        let links = Links::new();
        let mut ev = links.subscribe();
        let ghost: ChannelAddr = "unix:@ghost".parse().expect("addr");
        links.dialing(ConnId(1), ghost.clone());
        links.dial_connected(ConnId(1));
        let refused = ConnError::Refused(RefuseReason::WrongProc);
        links.core_event(&Event::ConnectionFailed {
            conn: ConnId(1),
            error: refused,
        });
        let b = proc("tcp:127.0.0.1:9,b");
        let via: ChannelAddr = "unix:@via".parse().expect("addr");
        links.set_address(b.clone(), via.clone());
        links.dialing(ConnId(2), via.clone());
        links.dial_connected(ConnId(2));
        links.core_event(&Event::PeerConnected {
            peer: b.clone(),
            incarnation: 1,
            conn: ConnId(2),
        });
        links.ended(ConnId(2), LinkError::ClosedHere);
        links.dialing(ConnId(3), via.clone());
        links.dial_connected(ConnId(3));
        links.core_event(&Event::PeerConnected {
            peer: b.clone(),
            incarnation: 2,
            conn: ConnId(3),
        });
        let got = drain(&mut ev);
        assert_eq!(
            got[0],
            LinkEvent::SessionRefused {
                addr: ghost,
                peer: None,
                reason: RefuseReason::WrongProc
            }
        );
        assert_eq!(
            &got[1..],
            &[
                LinkEvent::Connected {
                    peer: b.clone(),
                    incarnation: 1
                },
                LinkEvent::Lost {
                    peer: b.clone(),
                    error: LinkError::ClosedHere
                },
                LinkEvent::PeerRestarted {
                    peer: b.clone(),
                    old_incarnation: Some(1),
                    new_incarnation: Some(2)
                },
                LinkEvent::Connected {
                    peer: b,
                    incarnation: 2
                },
            ]
        );
    }

    #[test]
    fn subscriptions_end_with_the_proc_and_count_what_they_miss() {
        let links = Links::new();
        let mut ev = links.subscribe();
        let dropped = links.subscribe();
        drop(dropped);
        let a: ChannelAddr = "unix:@a".parse().expect("addr");
        for i in 0..(LINK_EVENT_QUEUE as u64 + 3) {
            links.dialing(ConnId(i), a.clone());
            links.ended(ConnId(i), LinkError::ClosedByPeer);
            lock(&links.state).failing.clear();
        }
        assert_eq!(ev.missed(), 3);
        assert_eq!(
            lock(&links.state).subscribers.len(),
            1,
            "the dropped one is gone"
        );
        links.close();
        assert_eq!(drain(&mut ev).len(), LINK_EVENT_QUEUE);
        assert!(crate::sync::block_on(ev.recv()).is_none());
        assert!(crate::sync::block_on(links.subscribe().recv()).is_none());
    }
}
