//! Single-thread latency of the float interpreter on MobileNetV2 at 224×224, plus the
//! batched throughput over all cores.
//!
//! `cargo bench -p lutq-interp --bench mobilenet [-- RUNS]`. The graph is built directly
//! in the IR with torchvision's architecture and random weights (the speed does not depend
//! on the values), once as exported (Conv → BatchNorm → Clip) and once with BatchNorm
//! folded into conv biases, as the quantizer calibrates it.
//!
//! For the real `models/mobilenet_v2.onnx`, import it with `lutq-onnx` and time it the
//! same way (not wired yet: this crate does not depend on the importer). onnxruntime
//! 1.22 fp32 with one intra-op thread is the yardstick (see the crate's report).

#[path = "support/mobilenet_v2.rs"]
mod mobilenet_v2;

use std::time::{Duration, Instant};

use lutq_interp::Interpreter;
use lutq_ir::{Graph, Tensor};

fn input(batch: usize) -> Tensor {
    let n = batch * 3 * 224 * 224;
    let data = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    Tensor::f32([batch, 3, 224, 224], data).unwrap()
}

fn latency(name: &str, graph: &Graph, runs: usize) {
    let interp = Interpreter::new(graph).unwrap();
    let x = input(1);
    for _ in 0..3 {
        interp.run(std::slice::from_ref(&x)).unwrap();
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            interp.run(std::slice::from_ref(&x)).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<28} single thread: min {:7.2} ms  median {:7.2} ms  ({runs} runs)",
        ms(times[0]),
        ms(times[runs / 2])
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a plain number sets the number of timed runs.
    let runs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(30)
        .max(1);
    let exported = mobilenet_v2::mobilenet_v2(1, 224, false, 1);
    let folded = mobilenet_v2::mobilenet_v2(1, 224, true, 1);
    latency("mobilenet_v2 (conv+bn+clip)", &exported, runs);
    latency("mobilenet_v2 (bn folded)", &folded, runs);

    let threads = rayon::current_num_threads();
    let n = 4 * threads;
    let batch = input(n);
    let t = Instant::now();
    lutq_interp::run_batch(&folded, &batch, None).unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "mobilenet_v2 (bn folded)     run_batch of {n} on {threads} threads: {:.1} images/s",
        n as f64 / s
    );
}
