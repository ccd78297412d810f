//! Hostile peers against procs of each adapter, over Unix socket files and TCP: every bad
//! connection is closed (and counted), what the victim holds (connections, handshake bytes,
//! sessions, held messages: `Proc::held`) stays within its configured bounds during and
//! after the attack, and a legitimate session between two procs keeps delivering in order
//! throughout. See `procwire_conformance::hostile`.
//!
//! The figures of every case (peak handshake bytes and connections, RSS, time to refusal,
//! the legitimate session's largest gap) as a Markdown table, each case run alone:
//!
//! ```text
//! cargo run --release -p procwire-conformance --example hostile_report -j 1
//! ```

macro_rules! hostile_suite {
    ($($adapter:ident => $run:path),* $(,)?) => {$(
        mod $adapter {
            hostile_suite!(@transports $run, unix => Unix, tcp => Tcp);
        }
    )*};
    (@transports $run:path, $($module:ident => $transport:ident),*) => {$(
        mod $module {
            hostile_suite!(@cases $run, $transport,
                garbage_bytes => GarbageBytes,
                http_request => HttpRequest,
                wrong_magic => WrongMagic,
                wrong_version => WrongVersion,
                huge_frame_length => HugeFrameLength,
                frame_just_over_the_limit => FrameJustOverTheLimit,
                oversized_hello_is_refused_at_once => OversizedHello,
                oversized_hello_with_its_body => OversizedHelloWithBody,
                wrong_cookie_is_refused => WrongCookie,
                hello_for_another_proc => HelloForAnotherProc,
                malformed_hello => MalformedHello,
                data_before_hello => DataBeforeHello,
                silent_connection => SilentConnection,
                stalled_preamble => StalledPreamble,
                two_hundred_held_connections => TwoHundredHeldConnections,
                two_hundred_held_almost_whole_hellos => TwoHundredAlmostWholeHellos,
                a_thousand_connect_close_cycles => AThousandConnectCloseCycles,
                session_table_flood => SessionTableFlood,
            );
        }
    )*};
    (@cases $run:path, $transport:ident, $($test:ident => $case:ident),* $(,)?) => {$(
        #[test]
        fn $test() {
            use procwire_conformance::hostile::Case;
            use procwire_conformance::ChannelTransport;
            let figures = $run(|x| async move {
                Case::$case.run(&x, ChannelTransport::$transport).await
            });
            assert!(figures.samples > 0, "what the victim held was never sampled");
        }
    )*};
}

hostile_suite! {
    tokio => procwire_conformance::adapters::run_tokio,
    smol => procwire_conformance::adapters::run_smol,
}
