//! The report binary writes a JSON array whose objects have exactly the agreed fields.

use std::process::Command;

use procwire_benches::json::FIELDS;

#[test]
fn report_writes_the_agreed_fields_for_the_core_row() {
    let path = std::env::temp_dir().join(format!("procwire-report-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_report"))
        .args(["--quick", "--only", "core", "--json"])
        .arg(&path)
        .output()
        .expect("run the report binary");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| core alone, pipelined"), "{stdout}");

    let text = std::fs::read_to_string(&path).expect("report wrote the JSON file");
    let _ = std::fs::remove_file(&path);
    let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let rows = value.as_array().expect("a JSON array");
    assert_eq!(rows.len(), 1, "--only core gives one figure: {text}");
    for row in rows {
        let obj = row.as_object().expect("objects");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        let mut want = FIELDS.to_vec();
        keys.sort_unstable();
        want.sort_unstable();
        assert_eq!(keys, want);
    }
    let row = &rows[0];
    assert_eq!(row["adapter"], "core");
    assert_eq!(row["transport"], "memory");
    assert_eq!(row["topology"], "one-thread");
    assert_eq!(row["workload"], "pipelined");
    assert_eq!(row["payload_bytes"], 64);
    assert_eq!(row["unit"], "msg/s");
    let (value, raw) = (
        row["value"].as_f64().unwrap(),
        row["raw_value"].as_f64().unwrap(),
    );
    assert!(value > 0.0 && raw > 0.0);
    let ratio = row["ratio"].as_f64().unwrap();
    assert!((ratio - value / raw).abs() <= 1e-9 * ratio.abs());
    // The report installs the counting allocator, so the core row measures allocations.
    assert!(row["allocs_per_msg"].as_f64().is_some(), "{text}");
}

#[test]
fn report_writes_the_many_peers_rows() {
    let path = std::env::temp_dir().join(format!("procwire-mesh-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_report"))
        .args(["--quick", "--only", "mesh", "--mesh", "4", "--json"])
        .arg(&path)
        .output()
        .expect("run the report binary");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&path).expect("report wrote the JSON file");
    let _ = std::fs::remove_file(&path);
    let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let rows = value.as_array().expect("a JSON array");
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["workload"].as_str().unwrap(), r["unit"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("mesh_rss", "MiB"),
            ("mesh_idle_cpu", "%core"),
            ("mesh_pipelined", "msg/s")
        ],
        "{text}"
    );
    for row in rows {
        assert_eq!(row.as_object().unwrap().len(), FIELDS.len(), "{text}");
        assert_eq!(row["adapter"], "tokio");
        assert_eq!(row["transport"], "unix");
        // Memory and message rates are always positive; idle CPU may round to zero.
        assert!(row["value"].as_f64().is_some_and(|v| v >= 0.0), "{text}");
    }
}
