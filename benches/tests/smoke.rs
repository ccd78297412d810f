//! Every scenario runs end to end and moves what it claims to (no timing is checked here:
//! speed is measured by the benches and the report, never by tests).

use std::time::Duration;

use procwire_benches::codec::{CodecBench, UnixCopy};
use procwire_benches::raw::RawBench;
use procwire_benches::raw_smol::RawSmolBench;
use procwire_benches::wire::ProcwireBench;
use procwire_benches::{runtime, smol_block_on, smol_executor, Net, SMALL};

#[test]
fn codec_scenarios_round_trip() {
    for (payload, batch) in [(SMALL, 100), (64 * 1024, 4)] {
        // `new` checks that every decoded envelope equals the one encoded.
        let mut codec = CodecBench::new(payload, batch);
        assert_eq!(codec.batch(), batch);
        assert_eq!(codec.decode_batch(), payload * batch);
        assert_eq!(codec.encode_decode_batch(), payload * batch);
        assert_eq!(codec.encode_batch(), codec.batch_bytes());
        let bytes = codec.encoded().clone();
        UnixCopy::new().unwrap().copy(&bytes).unwrap();
    }
}

#[test]
fn transport_scenarios_complete_on_both_nets() {
    let rt = runtime();
    for net in Net::ALL {
        rt.block_on(async {
            let mut pw = ProcwireBench::new(net).await.unwrap();
            pw.round_trips(5).await.unwrap();
            let mut times = Vec::new();
            pw.round_trip_times(3, &mut times).await.unwrap();
            assert_eq!(times.len(), 3);
            pw.pipelined(1).await.unwrap();
            pw.bulk(1).await.unwrap();
            pw.bulk_untyped(1).await.unwrap();
            let (a, b) = pw.stats();
            assert!(a.data_frames_sent > 10_000, "{a:?}");
            assert!(b.delivered > 10_000, "{b:?}");
            pw.shutdown().await;

            let mut raw = RawBench::new(net).await.unwrap();
            raw.round_trips(5).await.unwrap();
            raw.round_trip_times(3, &mut times).await.unwrap();
            assert_eq!(times.len(), 6);
            raw.pipelined(1).await.unwrap();
            raw.bulk(1).await.unwrap();
        });
    }
}

#[test]
fn smol_transport_scenarios_complete_on_both_nets() {
    let ex = smol_executor();
    for net in Net::ALL {
        smol_block_on(&ex, async {
            let mut pw = ProcwireBench::new_smol(net, &ex).await.unwrap();
            pw.round_trips(5).await.unwrap();
            let mut times = Vec::new();
            pw.round_trip_times(3, &mut times).await.unwrap();
            pw.pipelined(1).await.unwrap();
            pw.bulk(1).await.unwrap();
            pw.bulk_untyped(1).await.unwrap();
            let (a, b) = pw.stats();
            assert!(a.data_frames_sent > 10_000, "{a:?}");
            assert!(b.delivered > 10_000, "{b:?}");
            pw.shutdown().await;

            let mut raw = RawSmolBench::new(net, &ex).await.unwrap();
            raw.round_trips(5).await.unwrap();
            raw.round_trip_times(3, &mut times).await.unwrap();
            assert_eq!(times.len(), 6);
            raw.pipelined(1).await.unwrap();
            raw.bulk(1).await.unwrap();
            assert_eq!(raw.net(), net);
        });
    }
}

#[test]
fn mesh_connects_every_ordered_pair_and_moves_a_burst() {
    use procwire_benches::mesh::{process_cpu_ns, rss, Mesh};
    let rt = runtime();
    rt.block_on(async {
        let k = 6;
        let mut mesh = Mesh::new(k).await.unwrap();
        assert_eq!(mesh.len(), k);
        // `connect_all` checks that each node heard from every other exactly once.
        assert_eq!(mesh.connect_all().await.unwrap(), k * (k - 1));
        mesh.pipelined(1).await.unwrap();
        let (delivered, sent) = mesh.delivered_and_sent();
        assert!(delivered >= (k * (k - 1) + 10_000) as u64, "{delivered}");
        assert!(sent >= delivered, "{sent} < {delivered}");
        let idle = mesh
            .idle_cpu(Duration::ZERO, Duration::from_millis(10))
            .await;
        assert!(idle.is_some_and(|f| f >= 0.0));
        mesh.shutdown().await;
    });
    let (now, peak) = rss().expect("/proc/self/status has VmRSS and VmHWM");
    assert!(now > 0 && peak >= now);
    assert!(process_cpu_ns().is_some_and(|ns| ns > 0));
}
