//! `ocr IMAGE [--det NAME] [--rec NAME] [--dict PATH] [--json]`: PP-OCRv4
//! text detection and recognition as a WebAssembly guest, with the networks
//! run by the host through wasi-nn (wasm32-wasip1 or wasm32-wasip2).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ocr::cli::{self, Command};
use ocr::imgproc::BgrImage;
use ocr::nn::{NnEngine, context, load};
use ocr::output;
use ocr::pipeline;
use ocr::rec::Dictionary;

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
    let img = BgrImage::decode(&bytes)
        .map_err(|e| format!("cannot decode {} as a PNG or JPEG image: {e}", args.image))?;
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
