//! The in-process `local` transport: procs in one OS process reach each other through a
//! process-wide table of listeners, and a connection is a pair of in-memory pipes. Byte for
//! byte the same protocol runs over it as over sockets. Runtime-neutral: procs of different
//! adapters (tokio and smol) in one process reach each other over it too.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::pipe::pipe;
use crate::runtime::Connection;
use crate::sync::{lock, Queue};

/// Bytes buffered in each direction of a local connection.
const PIPE_BUF: usize = 256 * 1024;

struct Entry {
    token: u64,
    incoming: Arc<Queue<Connection>>,
}

fn table() -> &'static Mutex<HashMap<u64, Entry>> {
    static TABLE: OnceLock<Mutex<HashMap<u64, Entry>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// A bound local address. Dropping it frees the address.
pub(crate) struct LocalListener {
    id: u64,
    token: u64,
    incoming: Arc<Queue<Connection>>,
}

impl LocalListener {
    /// Binds local id `id`, or a fresh one if `id` is 0.
    pub(crate) fn bind(id: u64) -> io::Result<LocalListener> {
        let mut t = lock(table());
        let id = if id == 0 {
            loop {
                let candidate = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                if candidate != 0 && !t.contains_key(&candidate) {
                    break candidate;
                }
            }
        } else if t.contains_key(&id) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("local:{id} is bound by another proc in this process"),
            ));
        } else {
            id
        };
        let incoming = Arc::new(Queue::new());
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        t.insert(
            id,
            Entry {
                token,
                incoming: incoming.clone(),
            },
        );
        Ok(LocalListener {
            id,
            token,
            incoming,
        })
    }

    /// The bound id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The next inbound connection; `None` never happens while the listener is bound.
    pub(crate) async fn accept(&mut self) -> io::Result<Connection> {
        self.incoming
            .pop()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "local listener unbound"))
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        let mut t = lock(table());
        if t.get(&self.id).is_some_and(|e| e.token == self.token) {
            t.remove(&self.id);
        }
        drop(t);
        // Connections queued but never accepted: their dialers see end-of-stream.
        self.incoming.close();
        drop(self.incoming.consumer_gone());
    }
}

/// Connects to local id `id`.
pub(crate) fn connect(id: u64) -> io::Result<Connection> {
    let t = lock(table());
    let entry = t.get(&id).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("nothing listens on local:{id}"),
        )
    })?;
    let (to_them_r, to_them_w) = pipe(PIPE_BUF);
    let (to_us_r, to_us_w) = pipe(PIPE_BUF);
    let theirs = Connection {
        reader: Box::new(to_them_r),
        writer: Box::new(to_us_w),
        peer: "local".to_string(),
    };
    entry.incoming.push(theirs).map_err(|_| {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("local:{id} is closing"),
        )
    })?;
    Ok(Connection {
        reader: Box::new(to_us_r),
        writer: Box::new(to_them_w),
        peer: format!("local:{id}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::block_on;
    use futures_io::{AsyncRead, AsyncWrite};
    use std::future::poll_fn;
    use std::pin::Pin;

    #[test]
    fn connects_binds_refuses_and_frees() {
        let mut l = LocalListener::bind(0).expect("bind any");
        let id = l.id();
        assert_ne!(id, 0);
        assert_eq!(
            LocalListener::bind(id).err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
        let mut c = connect(id).expect("connect");
        let mut s = block_on(l.accept()).expect("accept");
        let n = block_on(poll_fn(|cx| {
            Pin::new(&mut c.writer).poll_write(cx, b"ping")
        }))
        .expect("write");
        assert_eq!(n, 4);
        let mut buf = [0u8; 4];
        let n = block_on(poll_fn(|cx| {
            Pin::new(&mut s.reader).poll_read(cx, &mut buf)
        }))
        .expect("read");
        assert_eq!(&buf[..n], b"ping");
        drop(l);
        assert_eq!(
            connect(id).err().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionRefused)
        );
        let again = LocalListener::bind(id).expect("rebind a freed id");
        assert_eq!(again.id(), id);
    }
}
