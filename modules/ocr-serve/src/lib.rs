//! The OCR example as a serving module: the request carries an encoded image
//! (PNG or JPEG) as one `BYTES` element named `image`; the response has one
//! row per text line, in reading order: `text` (BYTES), `score` (FP32) and
//! `box` (FP32, `[lines, 8]`: the four corners x0,y0 .. x3,y3 in pixels).
//!
//! Image decoding, resizing, normalization, box post-processing and CTC
//! decoding run here in wasm; the two networks run in the host through
//! wasi-nn (preloaded as `ppocr-det` and `ppocr-rec`, or the names in
//! `OCR_DET` / `OCR_REC`). The character dictionary is read from
//! `/models/ppocr_keys.txt` (the packaged artifact's file) or `OCR_DICT`.

use ocr::imgproc::BgrImage;
use ocr::nn::{NnEngine, context, load};
use ocr::pipeline;
use ocr::rec::Dictionary;
use weft_guest::Graph;
use weft_serve_guest::{
    DataType, Dim, Predictor, Signature, Tensor, TensorSpec, bytes_data, bytes_elements,
};

struct Ocr {
    engine: NnEngine<'static>,
    dict: Dictionary,
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype: Some(datatype),
        shape: Some(shape.iter().map(|&d| Dim::from_wire(d)).collect()),
    }
}

impl Predictor for Ocr {
    fn describe() -> Option<Signature> {
        Some(Signature {
            inputs: vec![spec("image", DataType::Bytes, &[1])],
            outputs: vec![
                spec("text", DataType::Bytes, &[-1]),
                spec("score", DataType::Fp32, &[-1]),
                spec("box", DataType::Fp32, &[-1, 8]),
            ],
        })
    }

    fn init() -> Result<Self, String> {
        let dict_path = env_or("OCR_DICT", "/models/ppocr_keys.txt");
        let dict = std::fs::read_to_string(&dict_path)
            .map_err(|e| format!("cannot read the character dictionary {dict_path}: {e}"))?;
        let dict = Dictionary::parse(&dict);
        let (det_name, rec_name) = (
            env_or("OCR_DET", "ppocr-det"),
            env_or("OCR_REC", "ppocr-rec"),
        );
        // The graphs live as long as the instance.
        let det: &'static Graph =
            Box::leak(Box::new(load(&det_name, "ch_PP-OCRv4_det_infer.onnx")?));
        let rec: &'static Graph =
            Box::leak(Box::new(load(&rec_name, "ch_PP-OCRv4_rec_infer.onnx")?));
        let engine = NnEngine {
            det: context(det, &det_name)?,
            rec: context(rec, &rec_name)?,
            classes: dict.num_classes(),
        };
        Ok(Ocr { engine, dict })
    }

    fn infer(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let [image] = inputs.as_slice() else {
            return Err(format!("expected one input `image`, got {}", inputs.len()));
        };
        let elements = bytes_elements(&image.data)?;
        let [bytes] = elements.as_slice() else {
            return Err(format!(
                "`image` must hold one encoded image, it holds {}",
                elements.len()
            ));
        };
        let img = ocr_image(bytes)?;
        let (lines, _) = pipeline::run(&img, &mut self.engine, &self.dict)?;
        let n = lines.len() as u64;
        let text = bytes_data(lines.iter().map(|l| l.text.as_bytes()));
        let score: Vec<u8> = lines
            .iter()
            .flat_map(|l| (l.score as f32).to_le_bytes())
            .collect();
        let boxes: Vec<u8> = lines
            .iter()
            .flat_map(|l| l.quad.iter().flat_map(|p| [p.x as f32, p.y as f32]))
            .flat_map(f32::to_le_bytes)
            .collect();
        Ok(vec![
            Tensor::new("text", DataType::Bytes, vec![n], text),
            Tensor::new("score", DataType::Fp32, vec![n], score),
            Tensor::new("box", DataType::Fp32, vec![n, 8], boxes),
        ])
    }
}

fn ocr_image(bytes: &[u8]) -> Result<BgrImage, String> {
    BgrImage::decode(bytes).map_err(|e| format!("cannot decode `image` as a PNG or JPEG: {e}"))
}

weft_serve_guest::serve!(Ocr);
