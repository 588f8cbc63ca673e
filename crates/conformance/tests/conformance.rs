//! The ONNX backend tests of the supported ops: every case passes, except those listed in
//! `expected-failures.txt`, which must fail at import with diagnostics. A newly passing
//! case or a new failure both fail this test (see the crate docs for how to update).

use lutq_conformance::{Manifest, check, default_data_dir, default_manifest_path, discover};

#[test]
fn onnx_backend_tests_match_the_manifest() {
    let cases = discover(&default_data_dir()).expect("the vendored data is readable");
    assert!(
        cases.len() > 250,
        "only {} cases under {}: the vendored data is missing (cargo xtask conformance --vendor)",
        cases.len(),
        default_data_dir().display()
    );
    let manifest = Manifest::load(&default_manifest_path()).expect("a valid manifest");
    let results = lutq_conformance::run_all(&cases);
    let problems = check(&results, &manifest);
    println!("{}", lutq_conformance::text_table(&results));
    assert!(
        problems.is_empty(),
        "{} case(s) disagree with expected-failures.txt:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
