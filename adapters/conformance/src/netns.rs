//! Two Linux network namespaces joined by a veth pair: two "hosts" on one machine, for tests
//! that cut the link between them.
//!
//! [`NetnsPair::create`] needs root and the `ip` tool (iproute2). It makes namespaces
//! `pwA-<pid>-<n>` and `pwB-<pid>-<n>`, one veth pair with an end in each, addresses
//! `NetnsPair::addr_a` / `NetnsPair::addr_b` (a /30 of a private range, on the veth only:
//! nothing is routed anywhere else, and the root namespace is not touched), and brings `lo`
//! and both veth ends up. Where any of that is not allowed it returns why, for the test to
//! print and skip. Dropping the pair deletes both namespaces (which removes the veth pair);
//! processes still inside them are the test's to end first.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Which side of a [`NetnsPair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Namespace A.
    A,
    /// Namespace B.
    B,
}

/// Two namespaces joined by a veth pair; deleted on drop.
#[derive(Debug)]
pub struct NetnsPair {
    ns_a: String,
    ns_b: String,
    veth_a: String,
    veth_b: String,
    created: Vec<String>,
}

/// Runs `ip` with `args`; the error says what failed and why.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetnsPair {
    /// Address of A's veth end.
    pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 231, 77, 1);
    /// Address of B's veth end.
    pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 231, 77, 2);

    /// Creates the two namespaces and the link between them, or says why it cannot.
    pub fn create() -> Result<NetnsPair, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let mut pair = NetnsPair {
            ns_a: format!("pwA-{pid}-{n}"),
            ns_b: format!("pwB-{pid}-{n}"),
            // Interface names are at most 15 bytes.
            veth_a: format!("pwa{pid}x{n}"),
            veth_b: format!("pwb{pid}x{n}"),
            created: Vec::new(),
        };
        if pair.veth_a.len() > 15 {
            pair.veth_a = format!("pwa{}", n % 1000);
            pair.veth_b = format!("pwb{}", n % 1000);
        }
        // Partial set-ups are undone by the drop of `pair` on each early return.
        for ns in [pair.ns_a.clone(), pair.ns_b.clone()] {
            ip(&["netns", "add", &ns])?;
            pair.created.push(ns);
        }
        ip(&[
            "link",
            "add",
            &pair.veth_a,
            "netns",
            &pair.ns_a,
            "type",
            "veth",
            "peer",
            "name",
            &pair.veth_b,
            "netns",
            &pair.ns_b,
        ])?;
        for (side, addr) in [(Side::A, Self::ADDR_A), (Side::B, Self::ADDR_B)] {
            let ns = pair.ns(side).to_string();
            let veth = pair.veth(side).to_string();
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/30"),
                "dev",
                &veth,
            ])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "link", "set", &veth, "up"])?;
        }
        Ok(pair)
    }

    /// The namespace of `side`.
    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::A => &self.ns_a,
            Side::B => &self.ns_b,
        }
    }

    /// The veth end inside `side`'s namespace.
    pub fn veth(&self, side: Side) -> &str {
        match side {
            Side::A => &self.veth_a,
            Side::B => &self.veth_b,
        }
    }

    /// The address of `side`'s veth end.
    pub fn addr(&self, side: Side) -> Ipv4Addr {
        match side {
            Side::A => Self::ADDR_A,
            Side::B => Self::ADDR_B,
        }
    }

    /// Sets `side`'s veth end administratively up or down (the other end then loses its
    /// carrier too).
    pub fn set_link(&self, side: Side, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", self.ns(side), "link", "set", self.veth(side), state])
    }

    /// A command that runs `program` inside `side`'s namespace (`ip netns exec`).
    pub fn command(&self, side: Side, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns(side)]).arg(program);
        c
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("netns cleanup: {e}");
            }
        }
    }
}
