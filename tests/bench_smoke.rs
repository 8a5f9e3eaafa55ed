//! Smoke test of `meshgroup bench fanout`: it runs on a tiny group and prints every key.
//! It times nothing and asserts no figure; the figures belong in docs/benchmarks.md.

use std::process::Command;

#[test]
fn bench_fanout_prints_its_keys() -> Result<(), Box<dyn std::error::Error>> {
    let out = Command::new(env!("CARGO_BIN_EXE_meshgroup")).args(["bench", "fanout", "--members", "20", "--rounds", "1", "--no-python", "--json"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    for key in ["members", "prepare_s", "floor_s", "python_s", "ratio_to_floor", "speedup_vs_python", "cores"] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["members"], 20);
    assert!(v["prepare_s"].as_f64().is_some_and(|s| s > 0.0) && v["floor_s"].as_f64().is_some_and(|s| s > 0.0));
    assert!(v["python_s"].is_null() && v["speedup_vs_python"].is_null(), "--no-python leaves the Python figures null");
    Ok(())
}
