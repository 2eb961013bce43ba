//! `logonet check parity` on the CPU (all six reference fixtures within 1e-4, one line each, exit code 0; a
//! tolerance that cannot be met gives exit code 1), and `--device cuda` in a build without CUDA: a clear error.

use std::process::{Command, Output};

fn logonet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_logonet"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("the logonet binary runs")
}

#[test]
fn check_parity_on_cpu_passes_all_fixtures_and_fails_an_impossible_tolerance() {
    let out = logonet(&["check", "parity", "--device", "cpu", "--json"]);
    assert!(
        out.status.success(),
        "check parity failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let rows = v["fixtures"].as_array().expect("fixtures array");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["fixture"].as_str()).collect();
    assert_eq!(
        names,
        [
            "lka",
            "spatial_attention",
            "block3d",
            "van3d_encoder",
            "ulkanet_tiny",
            "logonet_tiny"
        ]
    );
    for r in rows {
        let d = r["max_abs_diff"].as_f64().expect("a number");
        assert!(d <= 1e-4 && r["ok"] == true, "{r}");
    }
    // logonet_tiny compares five outputs (logits and the four intermediates).
    assert_eq!(rows[5]["outputs"].as_array().map(|a| a.len()), Some(5));

    let out = logonet(&["check", "parity", "--device", "cpu", "--tol", "0"]);
    assert_eq!(out.status.code(), Some(1), "a zero tolerance must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed the parity check"));
}

#[test]
fn missing_fixture_folder_is_an_error_naming_it() {
    let out = logonet(&["check", "parity", "--fixtures", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no/such/dir"));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_without_the_feature_says_how_to_build_it() {
    for args in [
        &[
            "bench",
            "model",
            "-m",
            "logonet-tiny",
            "--size",
            "32",
            "--device",
            "cuda",
        ][..],
        &["check", "parity", "--device", "cuda"][..],
    ] {
        let out = logonet(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("built without CUDA support") && err.contains("--features"),
            "{args:?}: {err}"
        );
    }
}
