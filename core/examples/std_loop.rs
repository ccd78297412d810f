//! procwire-core embedded in a plain std loop: two core [`Proc`] machines in one process,
//! exchanging messages over real Unix sockets with std's non-blocking sockets, no runtime
//! and no adapter. This is the loop to copy into your own event loop (mio, io_uring, an
//! embedded executor, ...).
//!
//! ```text
//! cargo run -p procwire-core --example std_loop
//! ```
//!
//! Every turn of the loop, for each proc, is the documented drive loop of
//! `procwire_core::proc`:
//!
//! 1. **mutate**: feed each input with its `handle_*` call and the current time (a new
//!    connection, bytes read, a connection closed, a dial that connected, a due deadline);
//! 2. **drain**: call `poll_output()` until `None` and carry out each output (deliver,
//!    dial, write, close) without calling back into the machine;
//! 3. **wait**: read `poll_timeout()` and sleep until that deadline or the next input.
//!
//! std has no way to wait for "readable or deadline" on many sockets at once, so step 3
//! sleeps at most one millisecond and polls the sockets again; a real loop waits in
//! `poll`/`epoll`/`kqueue` with `poll_timeout()` as the timeout.

// Core itself never reads a clock or blocks (clippy enforces it for the crate); the driver is
// exactly where the clock and the waiting live.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use procwire_core::envelope::Envelope;
use procwire_core::id::{ChannelAddr, Name, PortId, ProcId, UnixAddr};
use procwire_core::proc::{Config, ConnId, LocalPort, Output, Proc};
use procwire_core::registry::PortKind;
use procwire_core::time::Instant;

const MESSAGES: u64 = 5;

/// One socket the driver owns for the machine, named by the machine's `ConnId`.
struct Conn {
    stream: UnixStream,
    /// Bytes the machine asked to transmit that the socket has not taken yet.
    unsent: Vec<u8>,
    /// The machine said `Close`: flush `unsent`, then drop the socket.
    closing: bool,
}

/// A core proc machine with the sockets it uses: everything a driver holds.
struct Driver {
    proc: Proc,
    listener: UnixListener,
    path: PathBuf,
    conns: HashMap<ConnId, Conn>,
    /// Dials that connected during the drain, reported in the next mutate step.
    connected: Vec<ConnId>,
    /// Connections that failed or ended, reported in the next mutate step.
    closed: Vec<ConnId>,
    /// Messages delivered to this proc's ports.
    /// Delivered messages and the handle of the port each was delivered to.
    inbox: Vec<(LocalPort, Envelope)>,
}

impl Driver {
    /// A proc named `name` listening on a socket file.
    fn new(name: &str, seed: u64) -> io::Result<Driver> {
        let path = std::env::temp_dir().join(format!(
            "procwire-std-loop-{}-{name}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let unix = UnixAddr::path(path.to_str().expect("utf-8 temp dir")).expect("path fits");
        let id = ProcId::new(
            ChannelAddr::Unix(unix),
            Name::new(name).expect("valid name"),
        );
        // The incarnation must differ between starts of a proc, and the seed feeds session
        // ids and backoff jitter: a real program passes random numbers.
        let proc = Proc::new(id, Config::default(), seed, seed ^ 0x5eed);
        Ok(Driver {
            proc,
            listener,
            path,
            conns: HashMap::new(),
            connected: Vec::new(),
            closed: Vec::new(),
            inbox: Vec::new(),
        })
    }

    /// Step 1, mutate: feed every input that is ready, with the current time.
    fn mutate(&mut self, now: Instant) {
        for conn in std::mem::take(&mut self.connected) {
            self.proc.handle_connected(now, conn);
        }
        for conn in std::mem::take(&mut self.closed) {
            self.conns.remove(&conn);
            self.proc.handle_closed(now, conn);
        }
        while let Ok((stream, _)) = self.listener.accept() {
            stream.set_nonblocking(true).expect("non-blocking socket");
            let conn = self.proc.handle_accepted(now);
            self.conns.insert(conn, Conn::new(stream));
        }
        let mut buf = [0u8; 16 * 1024];
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in ids {
            while let Some(c) = self.conns.get_mut(&conn) {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        // End of stream: the machine forgets the connection.
                        self.conns.remove(&conn);
                        self.proc.handle_closed(now, conn);
                        break;
                    }
                    Ok(n) => self.proc.handle_bytes(now, conn, &buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.conns.remove(&conn);
                        self.proc.handle_closed(now, conn);
                        break;
                    }
                }
            }
        }
        if self.proc.poll_timeout().is_some_and(|at| at <= now) {
            self.proc.handle_timeout(now);
        }
    }

    /// Step 2, drain: carry out every output, without calling back into the machine (what
    /// it must hear about, such as a dial that connected, waits for the next mutate step).
    fn drain(&mut self) {
        while let Some(output) = self.proc.poll_output() {
            match output {
                Output::Deliver { port, env } => self.inbox.push((port, env)),
                Output::Returned(env) => {
                    println!(
                        "{}: returned to {}: {:?}",
                        self.name(),
                        env.sender,
                        env.returned
                    )
                }
                Output::Dial { conn, addr } => self.dial(conn, &addr),
                Output::Transmit { conn, data } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.unsent.extend_from_slice(&data);
                    }
                }
                Output::Close { conn } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.closing = true;
                    }
                }
                Output::Event(event) => println!("{}: {event:?}", self.name()),
                // Output is non-exhaustive: later versions may ask for more.
                _ => {}
            }
        }
        self.flush();
    }

    /// Connects a dial now (a Unix connect does not block for long); reports it next turn.
    fn dial(&mut self, conn: ConnId, addr: &ChannelAddr) {
        let stream = match addr {
            ChannelAddr::Unix(UnixAddr::Path(p)) => UnixStream::connect(p.as_str()),
            other => Err(io::Error::other(format!("this example dials no {other}"))),
        };
        match stream.and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(stream) => {
                self.conns.insert(conn, Conn::new(stream));
                self.connected.push(conn);
            }
            Err(e) => {
                println!("{}: dial {addr} failed: {e}", self.name());
                self.closed.push(conn);
            }
        }
    }

    /// Writes what each socket takes now; drops closed connections once flushed.
    fn flush(&mut self) {
        let mut done = Vec::new();
        for (&conn, c) in &mut self.conns {
            match c.write_some() {
                Ok(()) if c.closing && c.unsent.is_empty() => done.push((conn, false)),
                Ok(()) => {}
                // The machine already forgot a closing connection; others it must hear of.
                Err(_) => done.push((conn, !c.closing)),
            }
        }
        for (conn, tell) in done {
            self.conns.remove(&conn);
            if tell {
                self.closed.push(conn);
            }
        }
    }

    fn name(&self) -> &str {
        self.proc.id().name().as_str()
    }
}

impl Conn {
    fn new(stream: UnixStream) -> Conn {
        Conn {
            stream,
            unsent: Vec::new(),
            closing: false,
        }
    }

    /// Writes as much of `unsent` as the socket takes without blocking.
    fn write_some(&mut self) -> io::Result<()> {
        while !self.unsent.is_empty() {
            match self.stream.write(&self.unsent) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.unsent.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut a = Driver::new("a", 1)?;
    let mut b = Driver::new("b", 2)?;
    // Identities and ports are plain registry calls on the machine.
    let client = a.proc.reserve_root("client")?;
    let replies = a.proc.open_port(&client, PortKind::Stream, None)?;
    let server = b.proc.reserve_root("server")?;
    let requests: PortId = b.proc.open_port(&server, PortKind::Stream, None)?;
    println!("a = {}\nb = {}", a.proc.id(), b.proc.id());

    // Time is an input: microseconds since an epoch the driver picks.
    let epoch = std::time::Instant::now();
    let now = || Instant::from_micros(epoch.elapsed().as_micros() as u64);

    // Sending is an input too: the machine queues it and asks for a dial when it drains.
    for i in 0..MESSAGES {
        let ping = Envelope::new(client.clone(), requests.clone(), format!("ping {i}").into());
        a.proc.handle_send(now(), ping)?;
    }

    let mut answered = 0;
    while answered < MESSAGES {
        if epoch.elapsed() > Duration::from_secs(10) {
            return Err("no answers within 10 s".into());
        }
        for d in [&mut a, &mut b] {
            d.mutate(now()); // 1. mutate
            d.drain(); // 2. drain
        }
        // The server answers each request to the port it came from... here, a fixed one.
        for (port, req) in std::mem::take(&mut b.inbox) {
            let text = String::from_utf8_lossy(&req.payload).replace("ping", "pong");
            println!(
                "b: {} from {}",
                String::from_utf8_lossy(&req.payload),
                req.sender
            );
            let pong = Envelope::new(server.clone(), replies.clone(), text.into());
            b.proc.handle_send(now(), pong)?;
            // Tell the machine the message left its port's queue: ports are bounded
            // (`Config::port_queue_msgs`), and a full one holds the links feeding it.
            b.proc.handle_consumed(now(), port, 1, req.payload.len());
            b.drain();
        }
        for (port, reply) in std::mem::take(&mut a.inbox) {
            println!("a: {}", String::from_utf8_lossy(&reply.payload));
            a.proc.handle_consumed(now(), port, 1, reply.payload.len());
            answered += 1;
        }
        // 3. wait: until the earliest deadline, but (std having no readiness wait) at most
        // 1 ms before looking at the sockets again.
        let next = [a.proc.poll_timeout(), b.proc.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let nap = next.map_or(Duration::from_millis(1), |at| {
            Duration::from_micros(at.as_micros().saturating_sub(now().as_micros()))
                .min(Duration::from_millis(1))
        });
        std::thread::sleep(nap);
    }
    println!(
        "{answered} round trips; a encoded {} frames and b delivered {} messages",
        a.proc.stats().frames_encoded,
        b.proc.stats().delivered
    );
    Ok(())
}
