//! How fast the host is right now: fixed pieces of work, timed before a scenario.
//!
//! The figures of a shared VM change by a factor of two from one hour to the next with
//! the same binary (docs/BENCHMARKS.md, "Machine and method"). A report carries the time
//! this work took — JSON encoding and parsing for user space, socket calls for the
//! kernel — as a record of the host's state next to the figures. How well it tells a
//! slow hour from a fast one is not shown yet (docs/BENCHMARKS.md, "Machine and method").

use std::hint::black_box;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::report::round;

/// Documents encoded and parsed per try.
const ROUNDS: usize = 10_000;
/// Datagrams sent and received per try.
const DATAGRAMS: usize = 20_000;

/// Milliseconds the fixed work took, the fastest of three tries on one thread:
/// `cpu_ms` for user-space work, `syscall_ms` for socket system calls.
pub(crate) fn host_speed() -> Value {
    let document = sample_document();
    let cpu = (0..3).map(|_| one_try(&document)).min().unwrap_or_default();
    let syscalls = (0..3).filter_map(|_| socket_try().ok()).min();
    json!({
        "cpu_ms": round(cpu.as_secs_f64() * 1000.0),
        "syscall_ms": syscalls.map(|d| round(d.as_secs_f64() * 1000.0)),
    })
}

/// Sends a 64-byte datagram over a local socket pair and reads it back, `DATAGRAMS`
/// times: the kernel's share of the work, without waiting for another thread.
fn socket_try() -> std::io::Result<Duration> {
    let (a, b) = UnixDatagram::pair()?;
    let message = [7u8; 64];
    let mut buffer = [0u8; 64];
    let started = Instant::now();
    for _ in 0..DATAGRAMS {
        a.send(&message)?;
        b.recv(&mut buffer)?;
    }
    black_box(buffer);
    Ok(started.elapsed())
}

/// Encodes, parses and hashes a 1 KB document `ROUNDS` times: the kind of work the
/// server and the generator do per message.
fn one_try(document: &Value) -> Duration {
    let started = Instant::now();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for round in 0..ROUNDS {
        let text = serde_json::to_string(black_box(document)).expect("a JSON value encodes");
        let parsed: Value = serde_json::from_str(&text).expect("the encoding parses");
        for byte in text.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash ^= round as u64 ^ parsed.as_object().map_or(0, |o| o.len() as u64);
    }
    black_box(hash);
    started.elapsed()
}

/// An object of 20 fields, about 1 KB encoded.
fn sample_document() -> Value {
    let mut fields = Map::new();
    for i in 0..20 {
        fields.insert(format!("field_{i:02}"), Value::String(format!("{i:04}-{}", "x".repeat(36))));
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_about_one_kilobyte_and_both_parts_are_timed() {
        let size = serde_json::to_string(&sample_document()).unwrap().len();
        assert!((900..=1200).contains(&size), "sample document is {size} bytes");
        let speed = host_speed();
        assert!(speed["cpu_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{speed}");
        assert!(speed["syscall_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{speed}");
    }
}
