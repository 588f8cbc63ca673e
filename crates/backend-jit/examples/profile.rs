//! Per-node wall time of the JIT (median of 20 runs) on one bundled model.
//!
//! `cargo run --release -p lutq-backend-jit --example profile -- MODEL`

use std::time::Duration;

use lutq_backend_jit::compile;
use lutq_ir::int::IntOp;
use lutq_quant::Mode;

fn main() {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fashion_mobilenetv2".into());
    let calib = if name.starts_with("fashion") {
        lutq_bundled::fashion_calib(8).unwrap()
    } else {
        lutq_bundled::photos(8).unwrap()
    };
    let g = lutq_bundled::lowered(&name, Mode::Lut4PotChannel, &calib).unwrap();
    let mut jit = compile(&g).unwrap();
    let sample = lutq_bundled::rows(&calib)[0];
    let mut runs: Vec<Vec<(String, Duration)>> = (0..20)
        .map(|_| jit.run_timed(&[sample]).unwrap().1)
        .collect();
    let n = runs[0].len();
    let mut total = Duration::ZERO;
    let mut rows = Vec::new();
    for i in 0..n {
        let mut t: Vec<Duration> = runs.iter_mut().map(|r| r[i].1).collect();
        t.sort();
        let node = g.nodes.iter().find(|x| x.name == runs[0][i].0).unwrap();
        let desc = match &node.op {
            IntOp::Linear(l) => {
                let x = &g.ty(node.inputs[0]).shape;
                format!(
                    "{} w{:?} x{:?} -> {:?} g{} MMAC {:.2}",
                    node.op.name(),
                    l.weights.shape(),
                    x,
                    node.ty.shape,
                    l.conv.as_ref().map_or(1, |c| c.group),
                    (node.ty.num_elements() * l.weights.row_len()) as f64 / 1e6
                )
            }
            op => format!("{} {:?}", op.name(), node.ty.shape),
        };
        let desc = format!("{desc} ({})", node.name);
        total += t[10];
        rows.push((t[10], desc));
    }
    for (t, d) in &rows {
        println!("{:>10.1?} {d}", t);
    }
    let mut whole: Vec<Duration> = (0..20)
        .map(|_| {
            let t = std::time::Instant::now();
            jit.run(&[sample]).unwrap();
            t.elapsed()
        })
        .collect();
    whole.sort();
    println!(
        "run(): median {:.2?} (input quantization and output decoding included)",
        whole[10]
    );
    println!(
        "total {total:.2?}; {} compiled nodes, arena {:.1} MB, constants {:.1} MB, compiled in {:.2?}",
        n,
        jit.arena_bytes() as f64 / 1e6,
        jit.constant_bytes() as f64 / 1e6,
        jit.compile_time()
    );
}
