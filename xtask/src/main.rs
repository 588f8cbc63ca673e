//! `cargo xtask <task>`: project chores kept out of the normal build.

use anyhow::bail;

const USAGE: &str = "usage: cargo xtask <task> [args]

tasks:
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    let _ = rest;
    bail!("unknown task '{task}'\n\n{USAGE}")
}
