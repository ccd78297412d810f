//! Socket files of `unix:/path` addresses are owner-only by default whatever the umask, and
//! get the mode asked for in `ProcOptions::unix_mode`, on both adapters. The whole test
//! process runs with umask 000 (the worst case: std would create a socket file anyone may
//! connect to), which is why these tests live in a file of their own.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use procwire_conformance::adapters::{run_smol, run_tokio};
use procwire_conformance::{fixed_addr, options, Adapter, ChannelTransport, TestProc};
use procwire_smol::{ChannelAddr, UnixAddr};

/// Sets the process umask to 000 (idempotent: every test here wants the same).
fn open_umask() {
    // SAFETY: umask only swaps the process's file mode creation mask; it cannot fail and
    // touches no memory of ours.
    unsafe {
        libc::umask(0);
    }
}

fn path_of(addr: &ChannelAddr) -> PathBuf {
    match addr {
        ChannelAddr::Unix(UnixAddr::Path(p)) => PathBuf::from(p.as_str()),
        other => panic!("not a socket file address: {other}"),
    }
}

fn mode_of(path: &PathBuf) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// With umask 000 a plain std socket file is world-writable: the condition the proc's
/// default must not inherit.
#[test]
fn umask_000_makes_plain_socket_files_world_connectable() {
    open_umask();
    let path = path_of(&fixed_addr(ChannelTransport::Unix));
    let l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    assert_eq!(mode_of(&path), 0o777);
    drop(l);
    let _ = std::fs::remove_file(&path);
}

/// Starts a proc on a fresh socket file with `mode` (or the default) and checks the file's
/// mode, that the proc answers, and that the file is gone after shutdown.
async fn socket_file_mode<A: Adapter>(adapter: &A, mode: Option<u32>, expect: u32) {
    open_umask();
    let mut o = options();
    if let Some(m) = mode {
        o.unix_mode = m;
    }
    let addr = fixed_addr(ChannelTransport::Unix);
    let path = path_of(&addr);
    let p = adapter.start(addr, "moded", o).await.expect("proc starts");
    assert_eq!(
        mode_of(&path),
        expect,
        "{}: {}",
        adapter.name(),
        path.display()
    );
    std::os::unix::net::UnixStream::connect(&path).expect("the proc accepts");
    p.shutdown().await;
    assert!(!path.exists(), "socket file removed at shutdown");
}

#[test]
fn tokio_socket_files_are_owner_only_by_default() {
    run_tokio(|t| async move { socket_file_mode(&t, None, 0o600).await });
}

#[test]
fn tokio_socket_file_mode_can_be_widened() {
    run_tokio(|t| async move { socket_file_mode(&t, Some(0o660), 0o660).await });
}

#[test]
fn smol_socket_files_are_owner_only_by_default() {
    run_smol(|s| async move { socket_file_mode(&s, None, 0o600).await });
}

#[test]
fn smol_socket_file_mode_can_be_widened() {
    run_smol(|s| async move { socket_file_mode(&s, Some(0o666), 0o666).await });
}

#[test]
fn a_mode_beyond_permission_bits_fails_the_bind() {
    run_smol(|s| async move {
        let mut o = options();
        o.unix_mode = 0o1777;
        let addr = fixed_addr(ChannelTransport::Unix);
        let path = path_of(&addr);
        let err = s.start(addr, "moded", o).await.expect_err("refused");
        assert!(
            matches!(err, procwire_smol::ProcError::Bind { .. }),
            "{err}"
        );
        assert!(!path.exists());
    });
}
