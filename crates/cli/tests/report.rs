//! `lutq report` end to end on the bundled ResNet-8: the page parses, lists every linear
//! layer of the model, draws one chart mark per (layer, mode), refers to nothing outside
//! itself, and agrees with the `--json` data, which round-trips through serde and equals
//! what `lutq eval --per-layer` measures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use lutq_report::Report;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn lutq(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lutq"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

/// Every element of the page: its tag name and attributes.
fn elements(html: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let dom = tl::parse(html, tl::ParserOptions::default()).expect("the page parses");
    dom.nodes()
        .iter()
        .filter_map(|n| n.as_tag())
        .map(|tag| {
            let attrs = tag
                .attributes()
                .iter()
                .map(|(k, v)| {
                    (
                        k.into_owned(),
                        v.map(|v| v.into_owned()).unwrap_or_default(),
                    )
                })
                .collect();
            (tag.name().as_utf8_str().to_lowercase(), attrs)
        })
        .collect()
}

/// The linear layers of the model as the optimized float graph has them (the quantizer
/// keeps their names).
fn linear_layers(model: &str) -> Vec<String> {
    let graph = lutq_bundled::optimized(model).unwrap();
    graph
        .node_ids()
        .map(|id| graph.node(id))
        .filter(|n| matches!(n.op, lutq_ir::Op::Conv(_) | lutq_ir::Op::Gemm(_)))
        .map(|n| n.name.clone())
        .collect()
}

#[test]
fn report_on_resnet8_lists_every_layer_charts_every_mode_and_stays_offline() {
    let dir = std::env::temp_dir().join(format!("lutq-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    let modes = ["int8-pot-channel", "lut4-pot-channel"];
    let out = lutq(&[
        "report",
        "models/fashion_resnet8.onnx",
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "32",
        "--data",
        "data/fashion_mnist/test_x.npy",
        "--labels",
        "data/fashion_mnist/test_y.npy",
        "--limit",
        "48",
        "--modes",
        &modes.join(","),
        "-o",
        page.to_str().unwrap(),
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The JSON: the data the page shows, round-tripping through serde.
    let json = String::from_utf8(out.stdout).unwrap();
    let report = Report::from_json(&json).unwrap();
    assert_eq!(Report::from_json(&report.to_json()).unwrap(), report);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&report.to_json()).unwrap(),
        serde_json::from_str::<serde_json::Value>(&json).unwrap()
    );
    assert_eq!(report.samples, 48);
    assert_eq!(report.calibration_samples, 32);
    assert_eq!(report.data, "evaluation");
    let names: Vec<&str> = report.modes.iter().map(|m| m.mode.as_str()).collect();
    assert_eq!(names, modes);
    for m in &report.modes {
        assert!(m.top1_accuracy.is_some_and(|a| a > 0.7), "{m:?}");
        assert!(m.top1_agreement > 0.8, "{m:?}");
        assert!(m.sqnr_db.is_some_and(|s| s > 15.0), "{m:?}");
        assert!(m.c.arena_bytes >= m.c.arena_lower_bound && m.c.arena_lower_bound > 0);
    }
    // 4-bit codes take about half the int8 build's constants; int8 takes all of it.
    let (int8, lut4) = (&report.modes[0].c, &report.modes[1].c);
    assert_eq!(int8.constant_bytes, int8.int8_constant_bytes);
    assert!(
        lut4.constant_bytes * 10 < lut4.int8_constant_bytes * 6,
        "{lut4:?}"
    );
    assert_eq!(
        report.macs,
        report.layers.iter().map(|l| l.macs).sum::<u64>()
    );

    let linear = linear_layers("fashion_resnet8");
    assert!(linear.len() >= 8, "{linear:?}");
    let in_report: Vec<&str> = report.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(in_report, linear, "every linear layer, in execution order");
    for l in &report.layers {
        assert_eq!(l.modes.len(), 2);
        assert!(l.modes.iter().all(|m| m.sqnr_db.is_some()), "{l:?}");
        assert_eq!(l.modes[0].luts, 0, "int8 has no tables: {l:?}");
        // pot-channel: exponents per channel; one table per layer without
        // --lut-per-channel.
        assert_eq!(l.modes[1].luts, 1, "one table per layer: {l:?}");
        assert!(l.modes[1].weight_bytes < l.modes[0].weight_bytes, "{l:?}");
    }

    // The same numbers as `lutq eval --per-layer` on the same data (the report measures
    // nothing its own way).
    let eval = lutq(&[
        "eval",
        "models/fashion_resnet8.onnx",
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "32",
        "--data",
        "data/fashion_mnist/test_x.npy",
        "--labels",
        "data/fashion_mnist/test_y.npy",
        "--limit",
        "48",
        "--modes",
        &modes.join(","),
        "--per-layer",
        "--json",
    ]);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let eval: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    for (m, e) in report.modes.iter().zip(eval["results"].as_array().unwrap()) {
        assert_eq!(e["mode"], m.mode.as_str());
        assert_eq!(e["top1_accuracy"].as_f64(), m.top1_accuracy);
        assert_eq!(e["top1_agreement"].as_f64(), Some(m.top1_agreement));
        assert_eq!(e["sqnr_db"].as_f64(), m.sqnr_db);
        assert_eq!(e["weight_bytes"].as_u64(), Some(m.weight_bytes as u64));
    }
    for (k, e) in eval["results"].as_array().unwrap().iter().enumerate() {
        for l in &report.layers {
            let row = e["layers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == l.name.as_str())
                .unwrap_or_else(|| panic!("eval measured no layer {}", l.name));
            assert_eq!(row["sqnr_db"].as_f64(), l.modes[k].sqnr_db, "{}", l.name);
        }
    }

    // The page.
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    let els = elements(&html);
    let count = |name: &str| els.iter().filter(|(n, _)| n == name).count();
    assert_eq!(count("svg"), 1);
    assert_eq!(count("style"), 1);

    // No reference to anything outside the page.
    for (name, attrs) in &els {
        assert!(
            ![
                "script", "link", "img", "iframe", "object", "embed", "image", "use"
            ]
            .contains(&name.as_str()),
            "<{name}> in the page"
        );
        for (k, v) in attrs {
            assert!(
                !["src", "href", "xlink:href", "srcset", "action"].contains(&k.as_str()),
                "<{name} {k}={v}>"
            );
        }
    }
    for needle in ["://", "url(", "@import", "@font-face"] {
        assert!(!html.contains(needle), "'{needle}' in the page");
    }

    // The table: one row per (linear layer, mode), each layer named in its first row.
    let rows: BTreeSet<(String, String)> = els
        .iter()
        .filter(|(n, a)| n == "tr" && a.contains_key("data-layer"))
        .map(|(_, a)| (a["data-layer"].clone(), a["data-mode"].clone()))
        .collect();
    let marks: Vec<(String, String)> = els
        .iter()
        .filter(|(n, a)| n == "circle" && a.get("class").is_some_and(|c| c == "mark"))
        .map(|(_, a)| (a["data-layer"].clone(), a["data-mode"].clone()))
        .collect();
    let expected: BTreeSet<(String, String)> = linear
        .iter()
        .flat_map(|l| modes.iter().map(move |m| (l.clone(), m.to_string())))
        .collect();
    assert_eq!(rows, expected);
    for l in &linear {
        assert!(
            html.contains(&format!("<td class=\"name\" rowspan=\"2\">{l}</td>")),
            "{l}"
        );
    }
    // The chart: exactly one mark per (layer, mode), its tooltip carrying the JSON value.
    assert_eq!(marks.len(), expected.len());
    assert_eq!(marks.iter().cloned().collect::<BTreeSet<_>>(), expected);
    for l in &report.layers {
        for m in &l.modes {
            let tip = format!("{:.2} dB in {}</title>", m.sqnr_db.unwrap(), m.mode);
            assert!(html.contains(&tip), "{} {}", l.name, tip);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn report_errors_are_messages_before_any_work() {
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "report",
                "models/fashion_resnet8.onnx",
                "--calib",
                "data/fashion_mnist/train_x.npy",
            ],
            "nothing to write: pass -o report.html",
        ),
        (
            &[
                "report",
                "models/fashion_resnet8.onnx",
                "--modes",
                "fp32",
                "--json",
            ],
            "fp32 is the reference",
        ),
        (
            &["report", "models/fashion_resnet8.onnx", "--json"],
            "pass --calib C.npy",
        ),
        (
            &[
                "report",
                "models/fashion_resnet8.onnx",
                "--calib",
                "data/fashion_mnist/train_x.npy",
                "--labels",
                "data/fashion_mnist/test_y.npy",
                "--json",
            ],
            "--data",
        ),
    ];
    for (args, message) in cases {
        let out = lutq(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
