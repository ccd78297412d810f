//! Many peers (issue 8): K procwire-tokio procs in one process on one current-thread
//! runtime, every ordered pair connected, and what that costs.
//!
//! Each proc `mesh{i}` serves on an abstract Unix address and holds one caller-driven
//! instance `node` with one open typed port of `bytes::Bytes`. [`Mesh::connect_all`] sends
//! one 64-byte message from every node to every other node (the payload names its sender)
//! and waits until all K × (K − 1) have arrived, each sender exactly once at each
//! receiver; that dials every link (a link carries data one way, so K × (K − 1)
//! connections).
//!
//! What the report reads off a mesh:
//!
//! * memory: the process's resident set after setup and its peak ([`rss`], from
//!   `/proc/self/status`; [`reset_peak_rss`] restarts the peak where the kernel allows);
//! * idle CPU: the CPU time of the whole process ([`process_cpu_ns`], every thread) over a
//!   wall interval while the runtime only sleeps and the mesh's own tasks run
//!   ([`Mesh::idle_cpu`]);
//! * a busy pair: [`Mesh::pipelined`], the pipelined pattern of [`crate::wire`] (typed
//!   `Bytes`, sender and receiver joined on one task) from node 0 to node 1, in the mesh or
//!   in a mesh of two (the pair alone).

use std::time::{Duration, Instant};

use bytes::Bytes;
use procwire_tokio::{ChannelTransport, Instance, PortReceiver, PortRef, Proc, ProcOptions};

use crate::{Error, PIPELINE_N, SMALL};

/// Procs in the many-peers scenario unless told otherwise (issue 8's figure).
pub const MESH_PROCS: usize = 50;

/// One proc of the mesh and its participant.
struct Node {
    proc: Proc,
    instance: Instance,
    port: PortRef<Bytes>,
    rx: PortReceiver<Bytes>,
}

/// K procs on the current tokio runtime, each with an instance and an open port.
pub struct Mesh {
    nodes: Vec<Node>,
    small: Bytes,
}

/// A 64-byte payload whose first four bytes are `index` (little endian).
fn hello(index: usize) -> Bytes {
    let mut v = crate::payload(SMALL).to_vec();
    v[..4].copy_from_slice(&(index as u32).to_le_bytes());
    v.into()
}

impl Mesh {
    /// Stands up `k` procs (at least two) with default options on the current runtime;
    /// nothing is connected yet.
    pub async fn new(k: usize) -> Result<Self, Error> {
        assert!(k >= 2, "a mesh needs two procs");
        let mut nodes = Vec::with_capacity(k);
        for i in 0..k {
            let proc = Proc::direct_with(
                ChannelTransport::Unix.any(),
                format!("mesh{i}"),
                ProcOptions::default(),
            )
            .await?;
            let (instance, _) = proc.instance("node")?;
            let (port, rx) = instance.open_port::<Bytes>();
            nodes.push(Node {
                proc,
                instance,
                port: port.port_ref(),
                rx,
            });
        }
        Ok(Mesh {
            nodes,
            small: crate::payload(SMALL),
        })
    }

    /// Procs in the mesh.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a mesh has at least two procs.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Sends one message from every node to every other node and waits until each node has
    /// heard from every other exactly once. Returns the messages received (K × (K − 1)).
    pub async fn connect_all(&mut self) -> Result<usize, Error> {
        let k = self.nodes.len();
        let hellos: Vec<Bytes> = (0..k).map(hello).collect();
        let (senders, receivers): (Vec<_>, Vec<_>) = self
            .nodes
            .iter_mut()
            .map(|n| ((&n.instance, n.port.clone()), &mut n.rx))
            .unzip();
        let send = async {
            for (i, (from, _)) in senders.iter().enumerate() {
                for (j, (_, to)) in senders.iter().enumerate() {
                    if i != j {
                        to.send(from, &hellos[i]).await?;
                    }
                }
            }
            Ok::<_, Error>(())
        };
        let recv = async {
            let mut total = 0;
            for (j, rx) in receivers.into_iter().enumerate() {
                let mut seen = vec![false; k];
                seen[j] = true;
                for _ in 1..k {
                    let m = rx.recv().await?;
                    let from = u32::from_le_bytes(m[..4].try_into()?) as usize;
                    if from >= k || std::mem::replace(&mut seen[from], true) {
                        return Err(format!("node {j}: unexpected hello from {from}").into());
                    }
                    total += 1;
                }
            }
            Ok::<_, Error>(total)
        };
        let (s, r) = tokio::join!(send, recv);
        s?;
        let total = r?;
        // Settle the busy pair's link before anything is timed.
        self.pipelined_n(64).await?;
        Ok(total)
    }

    async fn pipelined_n(&mut self, n: usize) -> Result<(), Error> {
        let [a, b, ..] = &mut self.nodes[..] else {
            unreachable!("a mesh has two procs")
        };
        let (client, dest, rx, small) = (&a.instance, &b.port, &mut b.rx, &self.small);
        let send = async {
            for _ in 0..n {
                dest.send(client, small).await?;
            }
            Ok::<_, Error>(())
        };
        let recv = async {
            for _ in 0..n {
                rx.recv().await?;
            }
            Ok::<_, Error>(())
        };
        let (s, r) = tokio::join!(send, recv);
        s?;
        r
    }

    /// `bursts` bursts of [`PIPELINE_N`] 64-byte messages from node 0 to node 1, each until
    /// all arrived.
    pub async fn pipelined(&mut self, bursts: u64) -> Result<Duration, Error> {
        let t = Instant::now();
        for _ in 0..bursts {
            self.pipelined_n(PIPELINE_N).await?;
        }
        Ok(t.elapsed())
    }

    /// Lets the mesh sit idle for `settle`, then returns the CPU time the whole process used
    /// over the next `window` of wall time, as a fraction of one core (the runtime only
    /// sleeps meanwhile; whatever runs is the procs' own work: heartbeats, timers).
    pub async fn idle_cpu(&self, settle: Duration, window: Duration) -> Option<f64> {
        tokio::time::sleep(settle).await;
        let c0 = process_cpu_ns()?;
        let t = Instant::now();
        tokio::time::sleep(window).await;
        let c1 = process_cpu_ns()?;
        Some((c1 - c0) as f64 / 1e9 / t.elapsed().as_secs_f64())
    }

    /// Messages core delivered and data frames it sent, summed over all procs.
    pub fn delivered_and_sent(&self) -> (u64, u64) {
        self.nodes.iter().fold((0, 0), |(d, s), n| {
            let st = n.proc.stats();
            (d + st.delivered, s + st.data_frames_sent)
        })
    }

    /// Shuts every proc down, one after the other.
    pub async fn shutdown(self) {
        let mut procs = Vec::with_capacity(self.nodes.len());
        for n in self.nodes {
            drop((n.instance, n.rx));
            procs.push(n.proc);
        }
        for p in procs {
            p.shutdown().await;
        }
    }
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The process's resident set now and its peak (`VmRSS`, `VmHWM`), in bytes.
pub fn rss() -> Option<(u64, u64)> {
    Some((status_kib("VmRSS:")? * 1024, status_kib("VmHWM:")? * 1024))
}

/// Restarts the peak resident set at the current one (`echo 5 > /proc/self/clear_refs`);
/// false if the kernel refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU time used by all live threads of this process, in ns (sum of
/// `/proc/self/task/*/schedstat`).
pub fn process_cpu_ns() -> Option<u64> {
    let mut sum = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let s = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        sum += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(sum)
}
