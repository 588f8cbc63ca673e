//! Quick accuracy check while developing: `cargo run --release -p lutq-quant --example
//! quick_eval -- MODEL CALIB.npy DATA.npy [LABELS.npy] [modes] [cle]`. The supported
//! front door is `lutq eval`.

use lutq_dataio::NpyArray;
use lutq_ir::Tensor;
use lutq_quant::{Mode, QuantOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bytes = std::fs::read(&args[0]).unwrap();
    let graph = lutq_onnx::import(&bytes, &Default::default()).unwrap();
    let (graph, _) = lutq_opt::optimize(&graph, &Default::default()).unwrap();
    let graph = if args.get(5).is_some_and(|c| c == "cle") {
        lutq_opt::equalize(
            &graph,
            &lutq_opt::CleOptions {
                relu6: lutq_opt::Relu6Policy::ReplaceWithRelu,
                ..Default::default()
            },
        )
        .unwrap()
        .0
    } else {
        graph
    };
    let load = |p: &str, limit: usize| {
        let mut a = NpyArray::from_npy_file(p).unwrap();
        let n = a.shape[0].min(limit);
        let per = a.data.len() / a.shape[0];
        a.data.truncate(n * per);
        a.shape[0] = n;
        Tensor::f32(a.shape, a.data).unwrap()
    };
    let calib = load(&args[1], 256);
    let data = load(&args[2], 1000);
    let labels: Option<Vec<i64>> = args
        .get(3)
        .filter(|s| *s != "-")
        .map(|p| lutq_dataio::read_labels_file(p).unwrap());
    let modes: Vec<Mode> = args
        .get(4)
        .map_or("lut4-pot-channel".into(), |s| s.clone())
        .split(',')
        .map(|m| m.parse().unwrap())
        .collect();
    let reference = lutq_interp::run_batch(&graph, &data, None).unwrap();
    let reference = reference.as_f32().unwrap();
    let n = data.shape()[0];
    let per = reference.len() / n;
    let argmax = |r: &[f32]| {
        r.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    let acc = |out: &[f32]| {
        labels.as_ref().map(|l| {
            out.chunks(per)
                .zip(l)
                .filter(|(r, y)| argmax(r) as i64 == **y)
                .count() as f64
                / n as f64
        })
    };
    println!("fp32 acc {:?}", acc(reference));
    for mode in modes {
        let t = std::time::Instant::now();
        let mut options = QuantOptions::new(mode);
        if let Ok(k) = std::env::var("KEEP8") {
            options.keep_8bit = k.split(',').map(String::from).collect();
        }
        options.bias_correction = std::env::var("NO_BC").is_err();
        options.lut_per_channel = std::env::var("LUTCH").is_ok();
        options.data_aware = std::env::var("PLAIN").is_err();
        let (ig, report) = lutq_quant::quantize(&graph, &calib, &options, &|_| {}).unwrap();
        let qt = t.elapsed();
        let interp = lutq_interp::int::IntInterpreter::new(&ig).unwrap();
        let out = interp.run_batch(&data, None).unwrap();
        let out = out[0].as_f32().unwrap();
        let agree = out
            .chunks(per)
            .zip(reference.chunks(per))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count() as f64
            / n as f64;
        let sig: f64 = reference.iter().map(|&v| (v as f64).powi(2)).sum();
        let noise: f64 = reference
            .iter()
            .zip(out)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        println!(
            "{mode}: acc {:?} agree {agree:.4} sqnr {:.2} dB quantize {qt:.1?} weights {} B",
            acc(out),
            10.0 * (sig / noise).log10(),
            report.weight_bytes
        );
        if std::env::var("LAYERS").is_ok() {
            for l in &report.layers {
                println!(
                    "  {:<40} {} x{} y{} {} w[{},{}] err {:.4} bc {:.2} head {:.3}",
                    l.name,
                    l.weights,
                    l.input_exp,
                    l.output_exp,
                    l.output_type,
                    l.weight_exp_min,
                    l.weight_exp_max,
                    l.relative_output_error,
                    l.bias_correction_steps,
                    l.accumulator_headroom
                );
            }
        }
    }
}
