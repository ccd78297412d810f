//! The machine-readable report: one JSON object per figure, serialized by hand.
//!
//! Every object has exactly the fields of [`FIELDS`], in that order:
//! `adapter` (`"tokio"`, `"smol"`, `"core"`), `transport` (`"unix"`, `"tcp"`, `"memory"`),
//! `topology` (`"one-thread"`, `"two-process"`), `workload` (`"rtt_p50"`, `"rtt_p99"`,
//! `"pipelined"`, `"bulk"`, `"codec"`, and for the many-peers scenario `"mesh_rss"`,
//! `"mesh_idle_cpu"`, `"mesh_pipelined"`), `payload_bytes`, `value`, `unit`, `raw_value` (the
//! raw baseline's figure in the same unit; for the many-peers rows the same figure with two
//! procs, or the busy pair alone), `ratio` (`value / raw_value`) and
//! `allocs_per_msg` (a number, or `null` when not measured). Numbers that are not finite
//! are written as `null`.

use std::fmt::Write;

/// The field names of every object, in order.
pub const FIELDS: [&str; 10] = [
    "adapter",
    "transport",
    "topology",
    "workload",
    "payload_bytes",
    "value",
    "unit",
    "raw_value",
    "ratio",
    "allocs_per_msg",
];

/// One figure and its raw baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonRow {
    /// "tokio", "smol" or "core".
    pub adapter: &'static str,
    /// "unix", "tcp" or "memory".
    pub transport: &'static str,
    /// "one-thread" or "two-process".
    pub topology: &'static str,
    /// "rtt_p50", "rtt_p99", "pipelined", "bulk", "codec", "mesh_rss", "mesh_idle_cpu" or
    /// "mesh_pipelined".
    pub workload: &'static str,
    /// Payload of one message.
    pub payload_bytes: u64,
    /// procwire's figure.
    pub value: f64,
    /// Unit of `value` and `raw_value` ("us", "msg/s", "MiB/s", "MiB", "%core").
    pub unit: &'static str,
    /// The raw baseline's figure.
    pub raw_value: f64,
    /// Allocations per message in the timed window, if measured.
    pub allocs_per_msg: Option<f64>,
}

impl JsonRow {
    /// `value / raw_value`.
    pub fn ratio(&self) -> f64 {
        self.value / self.raw_value
    }

    /// The object, on one line.
    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        let strings = [self.adapter, self.transport, self.topology, self.workload];
        for (name, v) in FIELDS.iter().zip(strings) {
            let _ = write!(s, "\"{name}\":{},", string(v));
        }
        let _ = write!(
            s,
            "\"payload_bytes\":{},\"value\":{},\"unit\":{},\"raw_value\":{},\"ratio\":{},\
             \"allocs_per_msg\":{}}}",
            self.payload_bytes,
            number(Some(self.value)),
            string(self.unit),
            number(Some(self.raw_value)),
            number(Some(self.ratio())),
            number(self.allocs_per_msg),
        );
        s
    }
}

/// All rows as a JSON array, one object per line.
pub fn to_json_array(rows: &[JsonRow]) -> String {
    let body: Vec<String> = rows.iter().map(|r| format!("  {}", r.to_json())).collect();
    if body.is_empty() {
        "[]\n".to_string()
    } else {
        format!("[\n{}\n]\n", body.join(",\n"))
    }
}

fn string(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn number(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x}"),
        _ => "null".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> JsonRow {
        JsonRow {
            adapter: "core",
            transport: "memory",
            topology: "one-thread",
            workload: "pipelined",
            payload_bytes: 64,
            value: 2.5,
            unit: "msg/s",
            raw_value: 10.0,
            allocs_per_msg: None,
        }
    }

    #[test]
    fn one_row_has_every_field_in_order() {
        let s = row().to_json();
        assert_eq!(
            s,
            "{\"adapter\":\"core\",\"transport\":\"memory\",\"topology\":\"one-thread\",\
             \"workload\":\"pipelined\",\"payload_bytes\":64,\"value\":2.5,\"unit\":\"msg/s\",\
             \"raw_value\":10,\"ratio\":0.25,\"allocs_per_msg\":null}"
        );
    }

    #[test]
    fn non_finite_numbers_and_odd_strings_stay_valid() {
        let mut r = row();
        r.raw_value = 0.0;
        r.unit = "a\"b\\c\n";
        r.allocs_per_msg = Some(1.25);
        let s = r.to_json();
        assert!(s.contains("\"ratio\":null"), "{s}");
        assert!(s.contains("\"unit\":\"a\\\"b\\\\c\\u000a\""), "{s}");
        assert!(s.contains("\"allocs_per_msg\":1.25"), "{s}");
        assert_eq!(to_json_array(&[]), "[]\n");
        assert_eq!(to_json_array(&[row(), row()]).lines().count(), 4);
    }
}
