//! The conformance suite on procwire-smol: both procs, their tasks and the test itself on
//! one thread (a fresh executor per test).

use procwire_conformance::adapters::run_smol;
use procwire_conformance::scenarios;
use procwire_smol::ChannelTransport;

macro_rules! per_transport {
    ($($module:ident => $transport:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn echo_round_trips_and_once_ports() {
                run_smol(|s| async move {
                    scenarios::echo_round_trips_and_once_ports(&s, &s, $transport).await
                });
            }

            #[test]
            fn ordered_delivery_of_all_sizes() {
                run_smol(|s| async move {
                    scenarios::ordered_delivery_of_all_sizes(&s, &s, $transport).await
                });
            }

            #[test]
            fn missing_destinations_come_back() {
                run_smol(|s| async move {
                    scenarios::missing_destinations_come_back(&s, &s, $transport).await
                });
            }

            #[test]
            fn oversized_fails_at_sender() {
                run_smol(|s| async move {
                    scenarios::oversized_fails_at_sender(&s, &s, $transport).await
                });
            }

            #[test]
            fn peer_restart_returns_in_flight() {
                run_smol(|s| async move {
                    scenarios::peer_restart_returns_in_flight(&s, &s, $transport).await
                });
            }

            #[test]
            fn window_full_blocks_then_resumes() {
                run_smol(|s| async move {
                    scenarios::window_full_blocks_then_resumes(&s, &s, $transport).await
                });
            }

            #[test]
            fn pipelined_sends_wait_for_window() {
                run_smol(|s| async move {
                    scenarios::pipelined_sends_wait_for_window(&s, &s, $transport).await
                });
            }

            #[test]
            fn duplicate_root_names_and_bad_names_are_refused() {
                run_smol(|s| async move {
                    scenarios::duplicate_root_names_and_bad_names_are_refused(&s, $transport).await
                });
            }

            #[test]
            fn shutdown_leaks_no_tasks_and_closes_everything() {
                run_smol(|s| async move {
                    scenarios::shutdown_leaks_no_tasks_and_closes_everything(&s, &s, $transport)
                        .await
                });
            }
        }
    )*};
}

per_transport! {
    unix => ChannelTransport::Unix,
    tcp => ChannelTransport::Tcp,
    local => ChannelTransport::Local,
}

/// The default executor: `Proc::direct` on smol's global executor, driven from a plain
/// `smol::block_on`.
#[test]
fn global_executor_round_trips() {
    use procwire_conformance::SmolAdapter;
    let s = SmolAdapter::global();
    smol::block_on(async {
        scenarios::echo_round_trips_and_once_ports(&s, &s, ChannelTransport::Unix).await;
        scenarios::missing_destinations_come_back(&s, &s, ChannelTransport::Tcp).await;
    });
}
