//! `ocr IMAGE [--det NAME] [--rec NAME] [--dict PATH] [--json]`: PP-OCRv4
//! text detection and recognition as a WebAssembly guest, with the networks
//! run by the host through wasi-nn (wasm32-wasip1 or wasm32-wasip2).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ocr::cli::{self, Command};
use ocr::imgproc::BgrImage;
use ocr::output;
use ocr::pipeline::{self, Engine, RecOutput};
use ocr::rec::{self, Dictionary};
use weft_guest::{Context, ErrorCode, Graph, Tensor, TensorType};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("ocr: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            return Ok(());
        }
        Err(e) => return Err(format!("{e}\n{}", cli::USAGE)),
    };

    let dict = std::fs::read_to_string(&args.dict).map_err(|e| {
        format!(
            "cannot read the character dictionary {}: {e}; scripts/fetch-models.sh writes it \
             to models/ppocr_keys.txt: give the guest access to that directory or pass --dict PATH",
            args.dict
        )
    })?;
    let dict = Dictionary::parse(&dict);
    if dict.num_classes() <= 2 {
        return Err(format!("the character dictionary {} is empty", args.dict));
    }

    let start = Instant::now();
    let bytes = std::fs::read(&args.image).map_err(|e| {
        format!(
            "cannot read the image {}: {e} (is its directory available to the guest?)",
            args.image
        )
    })?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| format!("cannot decode {} as a PNG or JPEG image: {e}", args.image))?;
    let img = BgrImage::from_dynamic(img);
    let decode = start.elapsed();

    let det = load(&args.det, "ch_PP-OCRv4_det_infer.onnx")?;
    let rec = load(&args.rec, "ch_PP-OCRv4_rec_infer.onnx")?;
    let mut engine = NnEngine {
        det: context(&det, &args.det)?,
        rec: context(&rec, &args.rec)?,
        classes: dict.num_classes(),
    };
    let (lines, timings) = pipeline::run(&img, &mut engine, &dict)?;

    print!(
        "{}",
        if args.json {
            output::to_json(&lines)
        } else {
            output::to_text(&lines)
        }
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "timings: decode {:.1} ms, det {:.1} ms, postprocess {:.1} ms, rec {:.1} ms",
        ms(decode),
        ms(timings.det),
        ms(timings.postprocess),
        ms(timings.rec)
    );
    Ok(())
}

fn load(name: &str, file: &str) -> Result<Graph, String> {
    Graph::load_by_name(name).map_err(|e| {
        format!(
            "cannot load the model {name:?} ({e}); the host must preload it, e.g. \
             --nn-preload {name}:onnx:cpu:models/{file} (scripts/fetch-models.sh downloads \
             the models)"
        )
    })
}

fn context<'g>(graph: &'g Graph, name: &str) -> Result<Context<'g>, String> {
    graph
        .context()
        .map_err(|e| format!("cannot create an execution context for {name:?}: {e}"))
}

/// The PP-OCRv4 networks over wasi-nn.
struct NnEngine<'g> {
    det: Context<'g>,
    rec: Context<'g>,
    classes: usize,
}

/// Sets input 0 and computes.
fn run_model(ctx: &mut Context<'_>, dims: &[u32], input: &[f32]) -> weft_guest::Result<()> {
    ctx.set_input(0, &Tensor::f32(dims, input)?)?;
    ctx.compute()
}

impl Engine for NnEngine<'_> {
    type Error = String;

    fn detect(&mut self, input: &[f32], width: usize, height: usize) -> Result<Vec<f32>, String> {
        let (w, h) = (width as u32, height as u32);
        run_model(&mut self.det, &[1, 3, h, w], input)
            .and_then(|()| self.det.output(0, TensorType::F32, &[1, 1, h, w]))
            .and_then(|t| t.to_f32_vec())
            .map_err(|e| format!("text detection failed: {e}"))
    }

    fn recognize(&mut self, input: &[f32], n: usize, width: usize) -> Result<RecOutput, String> {
        let failed = |e: weft_guest::Error| format!("text recognition failed: {e}");
        let mismatch = |why: String| {
            format!(
                "the rec model's output does not fit the dictionary's {} characters (+ blank + \
                 space = {} classes): {why}; use the dictionary of this rec model \
                 (scripts/fetch-models.sh extracts it to models/ppocr_keys.txt) with --dict",
                self.classes - 2,
                self.classes
            )
        };
        let dims = [n as u32, 3, rec::HEIGHT as u32, width as u32];
        run_model(&mut self.rec, &dims, input).map_err(failed)?;
        // The number of steps depends on the width in a model-specific way;
        // the class count must be the dictionary's. A shape that does not fit
        // (wasip2) or a byte count that does not split into it (wasip1) is
        // reported as `invalid_argument`.
        let out = self
            .rec
            .output(0, TensorType::F32, &[n as u32, 0, self.classes as u32])
            .map_err(|e| match e.code() {
                ErrorCode::InvalidArgument => mismatch(e.to_string()),
                _ => failed(e),
            })?;
        // On wasip1 a wrong class count can still divide the byte count;
        // the network never outputs more steps than input columns.
        let steps = out.dims[1] as usize;
        if steps == 0 || steps > width {
            return Err(mismatch(format!(
                "that would make {steps} steps for a {width}-pixel-wide input"
            )));
        }
        Ok(RecOutput {
            steps,
            probs: out.to_f32_vec().map_err(failed)?,
        })
    }
}
