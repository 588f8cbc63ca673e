//! Median milliseconds per inference of tract (fp32, single thread, batch 1, warm) on an
//! ONNX model with a random input of the given shape:
//! `lutq-bench-tract MODEL.onnx ITERS N,C,H,W`.

use std::time::Instant;

use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let (path, iters, shape) = match &args[..] {
        [_, path, iters, shape] => (
            path.clone(),
            iters.parse::<usize>()?,
            shape
                .split(',')
                .map(|d| d.parse::<usize>())
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => {
            eprintln!("usage: lutq-bench-tract MODEL.onnx ITERS N,C,H,W");
            std::process::exit(2);
        }
    };
    let model = tract_onnx::onnx().model_for_path(&path)?;
    let model = model
        .with_input_fact(0, f32::fact(&shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let n: usize = shape.iter().product();
    let mut state = 0x2545_f491_u32;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect();
    let input: Tensor = tract_ndarray::ArrayD::from_shape_vec(shape, data)?.into();
    for _ in 0..3 {
        model.run(tvec!(input.clone().into()))?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let x = tvec!(input.clone().into());
        let t = Instant::now();
        model.run(x)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!("{}", times[times.len() / 2]);
    Ok(())
}
