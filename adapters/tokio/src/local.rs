//! The in-process `local` transport: procs in one OS process reach each other through a
//! process-wide table of listeners, and a connection is a pair of in-memory duplex pipes.
//! Byte-for-byte the same protocol runs over it as over sockets.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use crate::sync::lock;

/// Bytes buffered in each direction of a local connection.
const PIPE_BUF: usize = 256 * 1024;

struct Entry {
    token: u64,
    tx: mpsc::UnboundedSender<DuplexStream>,
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
    rx: mpsc::UnboundedReceiver<DuplexStream>,
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
        let (tx, rx) = mpsc::unbounded_channel();
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        t.insert(id, Entry { token, tx });
        Ok(LocalListener { id, token, rx })
    }

    /// The bound id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The next inbound connection; `None` never happens while the listener is bound.
    pub(crate) async fn accept(&mut self) -> io::Result<DuplexStream> {
        self.rx
            .recv()
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
    }
}

/// Connects to local id `id`.
pub(crate) fn connect(id: u64) -> io::Result<DuplexStream> {
    let t = lock(table());
    let entry = t.get(&id).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("nothing listens on local:{id}"),
        )
    })?;
    let (ours, theirs) = tokio::io::duplex(PIPE_BUF);
    entry.tx.send(theirs).map_err(|_| {
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("local:{id} is closing"),
        )
    })?;
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn connects_binds_refuses_and_frees() {
        let mut l = LocalListener::bind(0).expect("bind any");
        let id = l.id();
        assert_ne!(id, 0);
        assert_eq!(
            LocalListener::bind(id).err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
        let mut c = connect(id).expect("connect");
        let mut s = l.accept().await.expect("accept");
        c.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        drop(l);
        assert_eq!(
            connect(id).err().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionRefused)
        );
        let again = LocalListener::bind(id).expect("rebind a freed id");
        assert_eq!(again.id(), id);
    }
}
