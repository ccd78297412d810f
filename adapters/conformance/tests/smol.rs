//! The conformance suite on procwire-smol: both procs, their tasks and the test itself on
//! one thread (a fresh executor per test).

procwire_conformance::suite!(procwire_conformance::adapters::run_smol);

/// The default executor: `Proc::direct` on smol's global executor, driven from a plain
/// `smol::block_on`.
#[test]
fn global_executor_round_trips() {
    use procwire_conformance::{scenarios, ChannelTransport, SmolAdapter};
    let s = SmolAdapter::global();
    smol::block_on(async {
        scenarios::echo_round_trips_and_once_ports(&s, &s, ChannelTransport::Unix).await;
        scenarios::missing_destinations_come_back(&s, &s, ChannelTransport::Tcp).await;
    });
}
