//! Hostile peers against procs of each adapter, over Unix socket files and TCP: every bad
//! connection is closed (and counted), and a legitimate session between two procs keeps
//! delivering in order during and after the attack. See `procwire_conformance::hostile`.

macro_rules! hostile_suite {
    ($($adapter:ident => $run:path),* $(,)?) => {$(
        mod $adapter {
            hostile_suite!(@transports $run, unix => Unix, tcp => Tcp);
        }
    )*};
    (@transports $run:path, $($module:ident => $transport:ident),*) => {$(
        mod $module {
            use procwire_conformance::hostile::{self, BadConn};
            use procwire_conformance::ChannelTransport;

            const T: ChannelTransport = ChannelTransport::$transport;

            #[test]
            fn garbage_bytes() {
                $run(|x| async move { hostile::one_bad_conn(&x, T, |_| BadConn::garbage()).await });
            }

            #[test]
            fn http_request() {
                $run(|x| async move { hostile::one_bad_conn(&x, T, |_| BadConn::http()).await });
            }

            #[test]
            fn wrong_magic() {
                $run(|x| async move {
                    hostile::one_bad_conn(&x, T, |_| BadConn::wrong_magic()).await
                });
            }

            #[test]
            fn wrong_version() {
                $run(|x| async move {
                    hostile::one_bad_conn(&x, T, |_| BadConn::wrong_version()).await
                });
            }

            #[test]
            fn huge_frame_length() {
                $run(|x| async move {
                    hostile::one_bad_conn(&x, T, |_| BadConn::frame_of_len(u32::MAX)).await
                });
            }

            #[test]
            fn frame_just_over_the_limit() {
                $run(|x| async move {
                    hostile::one_bad_conn(&x, T, |_| BadConn::frame_of_len(hostile::MAX_FRAME + 1))
                        .await
                });
            }

            #[test]
            fn oversized_hello_is_refused_at_once() {
                $run(|x| async move { hostile::oversized_hello_is_refused_at_once(&x, T).await });
            }

            #[test]
            fn wrong_cookie_is_refused() {
                $run(|x| async move { hostile::wrong_cookie_is_refused(&x, T).await });
            }

            #[test]
            fn hello_for_another_proc() {
                $run(|x| async move {
                    hostile::one_bad_conn(&x, T, BadConn::hello_for_another_proc).await
                });
            }

            #[test]
            fn malformed_hello() {
                $run(|x| async move {
                    hostile::one_bad_conn(&x, T, |_| BadConn::malformed_hello()).await
                });
            }

            #[test]
            fn data_before_hello() {
                $run(|x| async move {
                    hostile::one_bad_conn(&x, T, |_| BadConn::data_before_hello()).await
                });
            }

            #[test]
            fn silent_connection() {
                $run(|x| async move { hostile::one_bad_conn(&x, T, |_| BadConn::silent()).await });
            }

            #[test]
            fn stalled_preamble() {
                $run(|x| async move {
                    hostile::one_bad_conn(&x, T, |_| BadConn::stalled_preamble()).await
                });
            }

            #[test]
            fn two_hundred_held_connections() {
                $run(|x| async move { hostile::many_held_conns(&x, T, 200).await });
            }

            #[test]
            fn a_thousand_connect_close_cycles() {
                $run(|x| async move { hostile::connect_close_cycles(&x, T, 1000).await });
            }
        }
    )*};
}

hostile_suite! {
    tokio => procwire_conformance::adapters::run_tokio,
    smol => procwire_conformance::adapters::run_smol,
}
