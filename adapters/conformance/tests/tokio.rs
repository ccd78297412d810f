//! The conformance suite on procwire-tokio (a two-worker multi-threaded runtime per test).

use procwire_conformance::scenarios;
use procwire_conformance::TokioAdapter;
use procwire_tokio::ChannelTransport;

macro_rules! per_transport {
    ($($module:ident => $transport:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn echo_round_trips_and_once_ports() {
                let t = TokioAdapter::current();
                scenarios::echo_round_trips_and_once_ports(&t, &t, $transport).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ordered_delivery_of_all_sizes() {
                let t = TokioAdapter::current();
                scenarios::ordered_delivery_of_all_sizes(&t, &t, $transport).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn missing_destinations_come_back() {
                let t = TokioAdapter::current();
                scenarios::missing_destinations_come_back(&t, &t, $transport).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn oversized_fails_at_sender() {
                let t = TokioAdapter::current();
                scenarios::oversized_fails_at_sender(&t, &t, $transport).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn duplicate_root_names_and_bad_names_are_refused() {
                let t = TokioAdapter::current();
                scenarios::duplicate_root_names_and_bad_names_are_refused(&t, $transport).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn shutdown_leaks_no_tasks_and_closes_everything() {
                let t = TokioAdapter::current();
                scenarios::shutdown_leaks_no_tasks_and_closes_everything(&t, &t, $transport)
                    .await;
            }
        }
    )*};
}

// procwire-tokio's own tests (adapters/tokio/tests/procs.rs) cover the restart and window
// scenarios on tokio already; these are the shared ones.
per_transport! {
    unix => ChannelTransport::Unix,
    tcp => ChannelTransport::Tcp,
    local => ChannelTransport::Local,
}
