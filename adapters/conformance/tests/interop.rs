//! A tokio proc and a smol proc in one process, exchanging messages both ways over Unix
//! sockets, TCP and the in-process `local` transport: the two adapters share core's wire
//! protocol (and procwire-host's driver). The smol procs' tasks run on an executor thread of
//! their own; the tokio procs' on the test's tokio runtime.

use procwire_conformance::adapters::SmolThread;
use procwire_conformance::TokioAdapter;
use procwire_conformance::{actors, addresses, link_events, monitors, scenarios};
use procwire_tokio::ChannelTransport;

macro_rules! both_ways {
    ($($module:ident => $transport:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn echo_tokio_to_smol_and_smol_to_tokio() {
                let smol = SmolThread::start();
                let (t, s) = (TokioAdapter::current(), smol.adapter());
                scenarios::echo_round_trips_and_once_ports(&t, &s, $transport).await;
                scenarios::echo_round_trips_and_once_ports(&s, &t, $transport).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ordered_delivery_tokio_to_smol() {
                let smol = SmolThread::start();
                let (t, s) = (TokioAdapter::current(), smol.adapter());
                scenarios::ordered_delivery_of_all_sizes(&t, &s, $transport).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ordered_delivery_smol_to_tokio() {
                let smol = SmolThread::start();
                let (t, s) = (TokioAdapter::current(), smol.adapter());
                scenarios::ordered_delivery_of_all_sizes(&s, &t, $transport).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn returns_limits_and_restarts_across_adapters() {
                let smol = SmolThread::start();
                let (t, s) = (TokioAdapter::current(), smol.adapter());
                scenarios::missing_destinations_come_back(&t, &s, $transport).await;
                scenarios::missing_destinations_come_back(&s, &t, $transport).await;
                scenarios::oversized_fails_at_sender(&s, &t, $transport).await;
                scenarios::oversized_fails_at_sender(&t, &s, $transport).await;
                scenarios::peer_restart_returns_in_flight(&t, &s, $transport).await;
                scenarios::peer_restart_returns_in_flight(&s, &t, $transport).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn identities_and_types_across_adapters() {
                let smol = SmolThread::start();
                let (t, s) = (TokioAdapter::current(), smol.adapter());
                scenarios::stale_refs_never_reach_a_new_holder(&t, &s, $transport).await;
                scenarios::stale_refs_never_reach_a_new_holder(&s, &t, $transport).await;
                scenarios::wrong_types_are_refused(&t, &s, $transport).await;
                scenarios::wrong_types_are_refused(&s, &t, $transport).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn link_events_and_monitors_across_adapters() {
                let smol = SmolThread::start();
                let (t, s) = (TokioAdapter::current(), smol.adapter());
                link_events::peer_going_away_and_coming_back(&t, &s, $transport).await;
                link_events::peer_going_away_and_coming_back(&s, &t, $transport).await;
                link_events::peers_that_dial_in_are_reported(&t, &s, $transport).await;
                link_events::peers_that_dial_in_are_reported(&s, &t, $transport).await;
                link_events::a_link_over_the_peers_connection_is_reported(&t, &s, $transport).await;
                link_events::a_link_over_the_peers_connection_is_reported(&s, &t, $transport).await;
                monitors::monitors_report_each_way_an_actor_goes(&t, &s, $transport).await;
                monitors::monitors_report_each_way_an_actor_goes(&s, &t, $transport).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn typed_actors_and_supervision_across_adapters() {
                let smol = SmolThread::start();
                let (t, s) = (TokioAdapter::current(), smol.adapter());
                actors::several_message_types_reach_their_handlers(&t, &s, $transport).await;
                actors::several_message_types_reach_their_handlers(&s, &t, $transport).await;
                actors::a_child_failure_fails_its_parent_by_default(&t, &s, $transport).await;
                actors::stopping_a_parent_stops_its_children_first(&s, &t, $transport).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn shutdown_leaks_no_tasks_on_either_side() {
                let smol = SmolThread::start();
                let (t, s) = (TokioAdapter::current(), smol.adapter());
                scenarios::shutdown_leaks_no_tasks_and_closes_everything(&t, &s, $transport)
                    .await;
            }
        }
    )*};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertised_and_host_name_addresses_across_adapters() {
    let smol = SmolThread::start();
    let (t, s) = (TokioAdapter::current(), smol.adapter());
    addresses::bind_any_advertise_loopback(&t, &s).await;
    addresses::bind_any_advertise_loopback(&s, &t).await;
    addresses::host_names_are_resolved_when_dialing(&t, &s).await;
    addresses::host_names_are_resolved_when_dialing(&s, &t).await;
    addresses::same_host_tcp_gets_the_congestion_control_asked_for(&t, &s).await;
    addresses::same_host_tcp_gets_the_congestion_control_asked_for(&s, &t).await;
}

both_ways! {
    unix => ChannelTransport::Unix,
    tcp => ChannelTransport::Tcp,
    local => ChannelTransport::Local,
}
