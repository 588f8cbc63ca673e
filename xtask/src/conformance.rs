//! `cargo xtask conformance`: the ONNX backend test data through lutq.
//!
//! * `cargo xtask conformance [--data DIR]` runs every vendored case (or those under
//!   `DIR`), prints the per-op table, checks the results against
//!   `crates/conformance/expected-failures.txt` and writes `docs/conformance.md`.
//! * `cargo xtask conformance --vendor [--from ONNX_PACKAGE_DIR]` (re)vendors the selected
//!   test directories from the installed `onnx` wheel (found with `python3` unless
//!   `--from` names its package directory) into `crates/conformance/data`, with
//!   `SHA256SUMS` and `PROVENANCE.md`. Expected failures are vendored without their data
//!   sets: the test only imports them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::gen_proto::workspace_root;

const ONNX_VERSION: &str = "1.22.0";
const COMMAND: &str = "cargo xtask conformance";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut data = None;
    let mut vendor = false;
    let mut from = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data" => data = Some(PathBuf::from(it.next().context("--data needs a folder")?)),
            "--vendor" => vendor = true,
            "--from" => from = Some(PathBuf::from(it.next().context("--from needs a folder")?)),
            other => bail!(
                "conformance: unknown argument '{other}' (usage: conformance [--data DIR] | --vendor [--from ONNX_PACKAGE_DIR])"
            ),
        }
    }
    if vendor {
        return vendor_data(from);
    }
    let root = workspace_root();
    let data = data.unwrap_or_else(lutq_conformance::default_data_dir);
    let cases =
        lutq_conformance::discover(&data).with_context(|| format!("reading {}", data.display()))?;
    if cases.is_empty() {
        bail!(
            "no test cases under {}: run `cargo xtask conformance --vendor` first",
            data.display()
        );
    }
    let manifest = lutq_conformance::Manifest::load(&lutq_conformance::default_manifest_path())
        .map_err(anyhow::Error::msg)?;
    let results = lutq_conformance::run_all(&cases);
    print!("{}", lutq_conformance::text_table(&results));
    let problems = lutq_conformance::check(&results, &manifest);
    let doc = root.join("docs/conformance.md");
    std::fs::write(
        &doc,
        lutq_conformance::markdown_report(&results, &manifest, COMMAND),
    )
    .with_context(|| format!("writing {}", doc.display()))?;
    println!("wrote {}", doc.display());
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("  {p}");
        }
        bail!(
            "{} result(s) disagree with expected-failures.txt",
            problems.len()
        );
    }
    println!("all results agree with expected-failures.txt");
    Ok(())
}

/// The installed onnx package directory, from python3.
fn onnx_package_dir() -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnx, os; print(onnx.__version__); print(os.path.dirname(onnx.__file__))",
        ])
        .output()
        .context("running python3 to locate the onnx package (or pass --from DIR)")?;
    if !out.status.success() {
        bail!(
            "python3 could not import onnx: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let mut lines = text.lines();
    let version = lines.next().unwrap_or_default();
    if version != ONNX_VERSION {
        bail!("the installed onnx is {version}, the vendored data must come from {ONNX_VERSION}");
    }
    Ok(PathBuf::from(lines.next().unwrap_or_default()))
}

fn vendor_data(from: Option<PathBuf>) -> anyhow::Result<()> {
    let package = match from {
        Some(p) => p,
        None => onnx_package_dir()?,
    };
    let source = package.join("backend/test/data");
    let record = wheel_record(&package);
    let manifest = lutq_conformance::Manifest::load(&lutq_conformance::default_manifest_path())
        .unwrap_or_default();
    let dest = lutq_conformance::default_data_dir();
    for suite in lutq_conformance::SUITES {
        let d = dest.join(suite);
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    let supported = lutq_onnx::supported_ops();
    let mut files: Vec<(String, String)> = Vec::new(); // (relative path, sha256 hex)
    let mut mismatched = Vec::new();
    let mut cases = 0;
    for suite in lutq_conformance::SUITES {
        let dir = source.join(suite);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("model.onnx").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let case_dir = dir.join(&name);
            let selected = match *suite {
                "node" => lutq_conformance::node_test_op(&name).is_some(),
                _ => {
                    let bytes = std::fs::read(case_dir.join("model.onnx"))?;
                    let summary = lutq_onnx::summarize(&bytes)
                        .map_err(|e| anyhow::anyhow!("{suite}/{name}: {e}"))?;
                    summary
                        .op_histogram
                        .keys()
                        .all(|op| supported.contains(&op.as_str()))
                }
            };
            if !selected {
                continue;
            }
            cases += 1;
            let with_data = !manifest.entries.contains_key(&format!("{suite}/{name}"));
            for rel in case_files(&case_dir, with_data)? {
                let src = case_dir.join(&rel);
                let bytes =
                    std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
                let rel_path = format!("{suite}/{name}/{rel}");
                let target = dest.join(&rel_path);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&target, &bytes)?;
                let digest = Sha256::digest(&bytes);
                if let Some(record) = &record {
                    let key = format!("onnx/backend/test/data/{rel_path}");
                    match record.get(&key) {
                        Some(expected) if *expected == b64_urlsafe_nopad(&digest) => {}
                        _ => mismatched.push(key),
                    }
                }
                files.push((rel_path, hex(&digest)));
            }
        }
    }
    if !mismatched.is_empty() {
        bail!(
            "{} vendored file(s) do not match the wheel's RECORD, e.g. {}",
            mismatched.len(),
            mismatched[0]
        );
    }
    files.sort();
    let mut sums = String::new();
    let mut total = 0u64;
    for (rel, digest) in &files {
        writeln!(sums, "{digest}  {rel}")?;
        total += std::fs::metadata(dest.join(rel))?.len();
    }
    std::fs::write(dest.join("SHA256SUMS"), sums)?;
    let license = package
        .parent()
        .map(|site| site.join(format!("onnx-{ONNX_VERSION}.dist-info/licenses/LICENSE")));
    match license {
        Some(l) if l.is_file() => {
            std::fs::copy(&l, dest.join("LICENSE"))
                .with_context(|| format!("copying {}", l.display()))?;
        }
        _ => eprintln!("warning: the wheel's LICENSE was not found; data/LICENSE is unchanged"),
    }
    std::fs::write(
        dest.join("PROVENANCE.md"),
        provenance(cases, files.len(), total, record.is_some()),
    )?;
    println!(
        "vendored {cases} test directories, {} files, {:.2} MB, into {}",
        files.len(),
        total as f64 / 1e6,
        dest.display()
    );
    Ok(())
}

/// `model.onnx` and, when `with_data`, every `test_data_set_*/*.pb`, relative to the case.
fn case_files(case_dir: &Path, with_data: bool) -> anyhow::Result<Vec<String>> {
    let mut files = vec!["model.onnx".to_string()];
    if !with_data {
        return Ok(files);
    }
    let mut sets: Vec<_> = std::fs::read_dir(case_dir)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("test_data_set_")
        })
        .collect();
    sets.sort_by_key(|e| e.file_name());
    for set in sets {
        let set_name = set.file_name().to_string_lossy().into_owned();
        let mut pbs: Vec<String> = std::fs::read_dir(set.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".pb"))
            .collect();
        pbs.sort();
        files.extend(pbs.into_iter().map(|p| format!("{set_name}/{p}")));
    }
    Ok(files)
}

/// The wheel's RECORD (`path → urlsafe-base64 sha256`), if the dist-info is beside the
/// package.
fn wheel_record(package: &Path) -> Option<std::collections::HashMap<String, String>> {
    let site = package.parent()?;
    let text =
        std::fs::read_to_string(site.join(format!("onnx-{ONNX_VERSION}.dist-info/RECORD"))).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut parts = l.split(',');
                let path = parts.next()?;
                let hash = parts.next()?.strip_prefix("sha256=")?;
                Some((path.to_string(), hash.to_string()))
            })
            .collect(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 4648 §5 base64 without padding, as wheel RECORD files write digests.
fn b64_urlsafe_nopad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn provenance(cases: usize, files: usize, bytes: u64, record_checked: bool) -> String {
    format!(
        "# ONNX backend test data — provenance\n\n\
         <!-- generated by `cargo xtask conformance --vendor`; do not edit -->\n\n\
         | | |\n|---|---|\n\
         | package | `onnx` (PyPI) {ONNX_VERSION} |\n\
         | files in the wheel | `onnx/backend/test/data/{{node,pytorch-converted}}/<test>/…` |\n\
         | licence | Apache-2.0: `LICENSE` here, copied from `onnx-{ONNX_VERSION}.dist-info/licenses/LICENSE` |\n\
         | upstream | <https://github.com/onnx/onnx/tree/v{ONNX_VERSION}/onnx/backend/test/data> |\n\
         | vendored | {cases} test directories, {files} files, {:.2} MB |\n\n\
         Files are copied unchanged; `SHA256SUMS` lists each one (`sha256sum -c SHA256SUMS` \
         in this folder verifies them){}.\n\n\
         Selection (`lutq_conformance::NODE_SELECTION`): the node tests of the ops lutq \
         supports, and the pytorch-converted tests whose every op is supported. Tests listed \
         in `../expected-failures.txt` are vendored without their data sets (only \
         `model.onnx`): they must fail at import, so their data is never read. When one \
         becomes supported, remove it from the list and re-run \
         `cargo xtask conformance --vendor`.\n",
        bytes as f64 / 1e6,
        if record_checked {
            "; at vendoring each digest was checked against the wheel's `RECORD`"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::b64_urlsafe_nopad(b"f"), "Zg");
        assert_eq!(super::b64_urlsafe_nopad(b"fo"), "Zm8");
        assert_eq!(super::b64_urlsafe_nopad(b"foo"), "Zm9v");
        assert_eq!(super::b64_urlsafe_nopad(&[0xfb, 0xff]), "-_8");
    }
}
