//! `lutq report` end to end on the bundled ResNet-8: the page parses, lists every linear
//! layer of the model, draws one chart mark per (layer, mode), refers to nothing outside
//! itself, and agrees with the `--json` data, which round-trips through serde and equals
//! what `lutq eval --per-layer` measures.

mod common;
use common::lutq;
use std::collections::{BTreeMap, BTreeSet};

use lutq_report::Report;

type Element = (String, BTreeMap<String, String>);

fn element(tag: &tl::HTMLTag<'_>) -> Element {
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
}

/// Every element of the page: its tag name and attributes.
fn elements(html: &str) -> Vec<Element> {
    let dom = tl::parse(html, tl::ParserOptions::default()).expect("the page parses");
    dom.nodes()
        .iter()
        .filter_map(|n| n.as_tag())
        .map(element)
        .collect()
}

/// Every `<svg>` of the page with the elements inside it.
fn charts(html: &str) -> Vec<(Element, Vec<Element>)> {
    let dom = tl::parse(html, tl::ParserOptions::default()).expect("the page parses");
    let parser = dom.parser();
    dom.nodes()
        .iter()
        .filter_map(|n| n.as_tag())
        .filter(|t| t.name().as_utf8_str().eq_ignore_ascii_case("svg"))
        .map(|svg| {
            let inside = svg
                .children()
                .all(parser)
                .iter()
                .filter_map(|n| n.as_tag())
                .map(element)
                .collect();
            (element(svg), inside)
        })
        .collect()
}

/// Elements of `inside` named `name` whose class list holds `class`.
fn count(inside: &[Element], name: &str, class: &str) -> usize {
    inside
        .iter()
        .filter(|(n, a)| {
            n == name
                && a.get("class")
                    .is_some_and(|c| c.split_whitespace().any(|c| c == class))
        })
        .count()
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
    // The whole Cortex-M4 flash (CI installs the cross compiler): int8 is its own int8
    // build; 4-bit codes with their kernels' code stay well under the int8 build, and
    // code comes on top of the constants.
    if let (Some(f8), Some(f4)) = (int8.m4_flash, lut4.m4_flash) {
        assert_eq!(f8.bytes, f8.int8_build_bytes, "{int8:?}");
        assert!(f4.bytes < f4.int8_build_bytes * 7 / 10, "{lut4:?}");
        assert!(f4.bytes > lut4.constant_bytes as u64, "{lut4:?}");
        assert!(
            f4.int8_build_bytes > lut4.int8_constant_bytes as u64,
            "{lut4:?}"
        );
    } else {
        assert!(
            std::env::var_os("LUTQ_REQUIRE_TOOLS").is_none(),
            "arm-none-eabi-gcc is required (LUTQ_REQUIRE_TOOLS)"
        );
    }

    let linear = linear_layers("fashion_resnet8");
    assert!(linear.len() >= 8, "{linear:?}");
    let in_report: Vec<&str> = report.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(in_report, linear, "every linear layer, in execution order");
    for l in &report.layers {
        assert_eq!(l.modes.len(), 2);
        assert!(l.modes.iter().all(|m| m.sqnr_db.is_some()), "{l:?}");
        assert_eq!(l.modes[0].luts, 0, "int8 has no tables: {l:?}");
        // pot-channel: exponents per channel; by default table groups, whose layer
        // stores the groups' tables and at most the shared one besides.
        let luts = l.modes[1].luts;
        if l.modes[1].weights == "int8" {
            // Where 4 bits would take no fewer bytes (the 16-channel stem: 144 weights),
            // the layer is int8, as in the int8 mode.
            assert_eq!(l.name, "/stem/stem.0/Conv", "{l:?}");
            assert_eq!(
                (luts, l.modes[1].weight_bytes),
                (0, l.modes[0].weight_bytes)
            );
        } else {
            assert!(
                (1..=lutq_quant::DEFAULT_LUT_TABLES + 1).contains(&luts),
                "at most {} tables per layer: {l:?}",
                lutq_quant::DEFAULT_LUT_TABLES + 1
            );
            // 4-bit codes take half int8's bytes, the tables and their index on top.
            assert!(l.modes[1].weight_bytes < l.modes[0].weight_bytes, "{l:?}");
        }
    }

    // The same numbers as `lutq eval --per-layer --backend c` on the same data (the
    // report measures nothing its own way).
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
        "--backend",
        "c",
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
        assert_eq!(
            e["c"]["flash_bytes"].as_u64(),
            m.c.m4_flash.map(|f| f.bytes),
            "{}",
            m.mode
        );
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
    let tags = |name: &str| els.iter().filter(|(n, _)| n == name).count();
    assert_eq!(tags("style"), 1);

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

    // The other charts: per (layer, mode) a weight histogram with one line per table
    // level and an activation histogram with its two clamp lines; per mode the memory
    // plan with one bar per buffer. Each chart's marks are the JSON's data.
    let charts = charts(&html);
    let of = |kind: &str| -> Vec<&(Element, Vec<Element>)> {
        charts
            .iter()
            .filter(|(svg, _)| svg.1.get("data-chart").map(String::as_str) == Some(kind))
            .collect()
    };
    assert_eq!(of("sqnr").len(), 1);
    assert_eq!(
        of("weights").len(),
        expected.len(),
        "every layer, every mode"
    );
    assert_eq!(of("memory").len(), modes.len());
    let non_empty = |h: &lutq_report::Histogram| h.counts.iter().filter(|&&c| c > 0).count();
    let find = |kind: &str, layer: &str, mode: &str| {
        of(kind)
            .into_iter()
            .find(|(svg, _)| svg.1["data-layer"] == layer && svg.1["data-mode"] == mode)
            .map(|(_, inside)| inside.clone())
    };
    let mut activation_charts = 0;
    for l in &report.layers {
        let channels = l.output_shape[1];
        for m in &l.modes {
            let w = m
                .weight_hist
                .as_ref()
                .expect("float weights for every layer");
            let inside = find("weights", &l.name, &m.mode).unwrap();
            assert_eq!(
                count(&inside, "rect", "bar"),
                non_empty(&w.hist),
                "{}",
                l.name
            );
            assert_eq!(
                count(&inside, "line", "level"),
                w.levels.len(),
                "{}",
                l.name
            );
            // Every weight once: channels × row length (MACs per output element).
            let out_elements: u64 = l.output_shape.iter().product::<usize>() as u64;
            assert_eq!(
                w.hist.total(),
                channels as u64 * (l.macs / out_elements),
                "{}",
                l.name
            );
            if m.luts == 0 {
                assert!(w.levels.is_empty(), "int8: no levels drawn");
            } else if m.luts == 1 {
                // One table for the layer: at most 16 distinct levels, each in every
                // channel's table, on the int8 grid.
                assert!((2..=16).contains(&w.levels.len()), "{:?}", w.levels);
                assert!(w.levels.iter().all(|v| v.channels == channels));
                assert!(w.levels.iter().all(|v| (-128..=127).contains(&v.value)));
            } else {
                // Table groups: each level in some channels' tables, every channel's
                // table holding 2 to 16 of them.
                assert!(
                    (2..=16 * m.luts).contains(&w.levels.len()),
                    "{:?}",
                    w.levels
                );
                assert!(
                    w.levels
                        .iter()
                        .all(|v| (1..=channels).contains(&v.channels))
                );
                assert!(w.levels.iter().all(|v| (-128..=127).contains(&v.value)));
                let reads: usize = w.levels.iter().map(|v| v.channels).sum();
                assert!((2 * channels..=16 * channels).contains(&reads), "{reads}");
            }
            match &m.activation_hist {
                Some(a) => {
                    activation_charts += 1;
                    let inside = find("activations", &l.name, &m.mode).unwrap();
                    assert_eq!(count(&inside, "line", "clamp"), 2);
                    assert_eq!(count(&inside, "rect", "bar"), non_empty(&a.hist));
                    assert!(a.clamp[0] < a.clamp[1]);
                    assert!((0.0..=1.0).contains(&a.clipped));
                    // The float output on the per-layer samples: every element once.
                    let elements: usize = l.output_shape[1..].iter().product();
                    assert_eq!(
                        a.hist.counts.iter().sum::<u64>() as usize,
                        elements * report.per_layer_samples,
                        "{}",
                        l.name
                    );
                }
                None => assert_eq!(
                    l.name,
                    report.layers.last().unwrap().name,
                    "only the i32 logits have no clamp range"
                ),
            }
        }
    }
    assert_eq!(of("activations").len(), activation_charts);
    assert!(activation_charts >= (report.layers.len() - 1) * modes.len());
    for m in &report.modes {
        let a = &m.arena;
        let inside = &of("memory")
            .into_iter()
            .find(|(svg, _)| svg.1["data-mode"] == m.mode)
            .unwrap()
            .1;
        assert_eq!(count(inside, "rect", "block"), a.blocks.len());
        assert_eq!(a.arena_bytes, m.c.arena_bytes, "the C build's arena");
        assert_eq!(a.lower_bound, m.c.arena_lower_bound);
        // Every conv writes a buffer of its own (none runs in place).
        let buffers = a.blocks.iter().filter(|b| !b.scratch).count();
        assert!(buffers >= report.layers.len(), "{buffers}");
        for l in &report.layers {
            assert!(
                a.blocks.iter().any(|b| !b.scratch && b.name == l.name),
                "{}",
                l.name
            );
        }
        // Activations and scratch live per step: at its peak at least the activations'
        // lower bound, never more than the arena.
        let peak = a.occupancy.iter().copied().max().unwrap();
        assert!(a.lower_bound <= peak && peak <= a.arena_bytes, "{peak}");
        assert!(
            m.m4_instructions > report.macs,
            "about two instructions per MAC"
        );
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
