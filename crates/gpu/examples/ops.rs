use std::collections::BTreeMap;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Cost;
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let shape: Vec<usize> = args[2].split(',').map(|s| s.parse().unwrap()).collect();
    let mut m = tract_onnx::onnx().model_for_path(&args[1])?;
    m.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))?;
    let m = m.into_typed()?.into_decluttered()?;
    let mut counts: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for n in m.nodes() {
        let inputs: Vec<&TypedFact> = n
            .inputs
            .iter()
            .map(|o| m.outlet_fact(*o).unwrap())
            .collect();
        let flops: f64 =
            n.op.cost(&inputs)
                .unwrap_or_default()
                .iter()
                .map(|(c, d)| {
                    if matches!(c, Cost::FMA(_)) {
                        d.to_i64().unwrap_or(0) as f64
                    } else {
                        0.0
                    }
                })
                .sum();
        let key = format!("{} [{}]", n.op.name(), std::any::type_name_of_val(&*n.op));
        let e = counts.entry(key).or_default();
        e.0 += 1;
        e.1 += flops;
        if args.len() > 3 {
            println!(
                "{} {} {:?} -> {:?}",
                n.op.name(),
                n.op.info()?.join(" "),
                inputs.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>(),
                n.outputs[0].fact
            );
        }
    }
    for (k, (c, f)) in counts {
        println!("{c:5} {:12.0} {k}", f);
    }
    Ok(())
}
