//! `--flash-budget` end to end on the bundled ResNet-8: the chosen plan fits the budget
//! exactly as the generated C counts its constants (`lutq compile --json`), a tighter
//! budget never gives more bytes, the smallest plan is all-lut4, a budget below it is an
//! error naming it, and one above all-int8 gives all-int8.

mod common;
use common::lutq;
use std::path::Path;

use serde_json::Value;

/// `lutq compile` of ResNet-8 under `budget`: the C backend's summary with the plan.
fn compile(budget: &str, dir: &Path) -> Result<Value, String> {
    let out = lutq(&[
        "compile",
        "models/fashion_resnet8.onnx",
        "--mode",
        "lut4-pot-channel",
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "48",
        "--sensitivity-samples",
        "4",
        "--flash-budget",
        budget,
        "-o",
        dir.to_str().unwrap(),
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        return Err(stderr);
    }
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["stderr"] = Value::String(stderr);
    Ok(v)
}

fn bytes(v: &Value, key: &str) -> usize {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}")) as usize
}

/// The constants the generated weights file declares, summed from its array sizes.
fn declared_bytes(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("fashion_resnet8_weights.c")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("const "))
        .map(|l| {
            let size = match l.split_whitespace().next().unwrap() {
                "int32_t" => 4,
                _ => 1,
            };
            let n: usize = l[l.find('[').unwrap() + 1..l.find(']').unwrap()]
                .parse()
                .unwrap();
            size * n
        })
        .sum()
}

#[test]
fn flash_budget_fits_exactly_is_monotone_and_has_the_right_extremes() {
    let dir = std::env::temp_dir().join(format!("lutq-budget-{}", std::process::id()));
    let mut last = 0;
    let mut first_plan = None;
    for ratio in ["0.55x", "0.6x", "0.7x", "0.8x"] {
        let v = compile(ratio, &dir).unwrap();
        let plan = &v["flash_budget"];
        let budget = bytes(plan, "budget_bytes");
        let int8 = bytes(plan, "int8_bytes");
        let r: f64 = ratio.trim_end_matches('x').parse().unwrap();
        assert_eq!(budget, (r * int8 as f64).floor() as usize, "{ratio}");
        // The plan fits, as the C backend counts it and as the file declares it.
        let c = bytes(&v, "weight_bytes");
        assert_eq!(c, bytes(plan, "bytes"), "{ratio}: plan vs C summary");
        assert_eq!(
            c,
            declared_bytes(&dir),
            "{ratio}: C summary vs weights file"
        );
        assert!(c <= budget, "{ratio}: {c} B over the budget {budget} B");
        let layer_sum: usize = plan["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| bytes(l, "bytes"))
            .sum();
        // ResNet-8 has no tables or softmax: the layers' constants are all of them.
        assert_eq!(layer_sum, c, "{ratio}: per-layer bytes vs the total");
        assert!(c >= last, "{ratio}: {c} B < {last} B for a looser budget");
        last = c;
        // At or above the plain mode's size (every layer in its default table groups), no
        // layer gets a coarser format than the plain mode's: one table.
        let layers = plan["layers"].as_array().unwrap();
        let option_bytes = |l: &Value, f: &str| {
            l["options"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["format"] == f)
                .map(|o| bytes(o, "bytes"))
        };
        let plain: usize = layers
            .iter()
            .map(|l| option_bytes(l, "lut4/groups").unwrap())
            .sum();
        if budget >= plain {
            for l in layers {
                assert_ne!(l["format"], "lut4", "{ratio}: below the plain mode: {l}");
            }
        }
        first_plan.get_or_insert(v);
    }
    let v = first_plan.unwrap();
    let plan = &v["flash_budget"];
    let (min, int8) = (bytes(plan, "min_bytes"), bytes(plan, "int8_bytes"));
    assert!(last > min, "0.8x upgrades some layer beyond all-lut4");

    // The smallest plan: every layer in its smallest format.
    // `min_bytes` comes from the sensitivity pass's candidates; the plan is refitted on
    // its own upstream, where a rescale may need a shift table its candidate did not
    // (a few bytes): then the budget of `min_bytes` is refused with the error naming
    // the refitted plan's size, and that size works.
    let min = match compile(&min.to_string(), &dir) {
        Ok(_) => min,
        Err(err) => {
            let named: usize = err
                .split("--flash-budget ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("the error names a budget: {err}"));
            assert!(
                named > min && named <= min + 64,
                "{named} B named, {min} B reported: {err}"
            );
            named
        }
    };
    let smallest = compile(&min.to_string(), &dir).unwrap();
    for l in smallest["flash_budget"]["layers"].as_array().unwrap() {
        // lut4 with one table (the table groups of the default cost a byte per channel
        // and 16 per table more).
        let least = l["options"]
            .as_array()
            .unwrap()
            .iter()
            .min_by_key(|o| bytes(o, "bytes"))
            .unwrap();
        assert_eq!(l["format"], least["format"], "{l}");
    }
    let formats = smallest["flash_budget"]["layers"].as_array().unwrap();
    // Every layer was offered one table, the default table groups and a table per
    // channel beside int8; one table is never larger than the groups.
    for l in formats {
        let option = |f: &str| {
            l["options"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["format"] == f)
                .unwrap_or_else(|| panic!("{f} offered: {l}"))
                .clone()
        };
        option("int8");
        option("lut4/ch");
        assert!(
            bytes(&option("lut4"), "bytes") <= bytes(&option("lut4/groups"), "bytes"),
            "{l}"
        );
    }
    assert!(
        formats.iter().filter(|l| l["format"] == "lut4").count() * 2 > formats.len(),
        "most layers are smallest in lut4: {formats:?}"
    );
    // (Refitted on the lut4 network upstream, a layer's rescale may come out uniform and
    // drop its shift table: at most the candidates' count.)
    assert!(bytes(&smallest, "weight_bytes") <= min);

    // One byte less: an error that names the minimum.
    let err = compile(&(min - 1).to_string(), &dir).unwrap_err();
    assert!(
        err.contains(&format!("--flash-budget {min}")),
        "the error names the smallest plan: {err}"
    );

    // More than all-int8: all-int8, and it says so.
    let all = compile("2x", &dir).unwrap();
    assert!(all["flash_budget"]["all_int8"].as_bool().unwrap());
    for l in all["flash_budget"]["layers"].as_array().unwrap() {
        assert_eq!(l["format"], "int8", "{l}");
    }
    // The all-int8 plan is the sensitivity pass's own network, byte for byte.
    assert_eq!(bytes(&all, "weight_bytes"), int8);
    assert!(
        all["stderr"]
            .as_str()
            .unwrap()
            .contains("every layer keeps int8")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flash_budget_needs_a_lut4_mode() {
    let out = lutq(&[
        "eval",
        "models/fashion_resnet8.onnx",
        "--modes",
        "int8-pot-channel",
        "--calib",
        "data/fashion_mnist/train_x.npy",
        "--calib-limit",
        "16",
        "--data",
        "data/fashion_mnist/test_x.npy",
        "--limit",
        "4",
        "--flash-budget",
        "100k",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--mode lut4-pot-channel"), "{err}");
}
