//! The whole of rapidocr's `RapidOCR.__call__` with detection and
//! recognition (the angle classifier is not used: this port handles upright
//! text only), with the networks behind the [`Engine`] trait.

use std::time::{Duration, Instant};

use crate::geometry::{Point, Quad};
use crate::imgproc::BgrImage;
use crate::rec::Dictionary;
use crate::{det, rec};

/// Images with a longer side than this are scaled down first (`max_side_len`).
pub const MAX_SIDE_LEN: usize = 2000;
/// Images with a shorter side than this are scaled up first (`min_side_len`).
pub const MIN_SIDE_LEN: usize = 30;
/// Images this low or lower get black bands above and below (`min_height`).
pub const MIN_HEIGHT: usize = 30;
/// ... as do images wider than this many heights (`width_height_ratio`).
pub const WIDTH_HEIGHT_RATIO: usize = 8;
/// Recognized lines scoring below this are dropped (`text_score`).
pub const TEXT_SCORE: f64 = 0.5;

/// Runs the two networks.
pub trait Engine {
    type Error;

    /// Runs detection on a `[1, 3, height, width]` input and returns the
    /// `[1, 1, height, width]` text probability map.
    fn detect(
        &mut self,
        input: &[f32],
        width: usize,
        height: usize,
    ) -> Result<Vec<f32>, Self::Error>;

    /// Runs recognition on a `[n, 3, 48, width]` batch and returns its
    /// `[n, steps, classes]` class probabilities, where `classes` must be the
    /// dictionary's [`Dictionary::num_classes`].
    fn recognize(
        &mut self,
        input: &[f32],
        n: usize,
        width: usize,
    ) -> Result<RecOutput, Self::Error>;
}

/// Output of [`Engine::recognize`].
pub struct RecOutput {
    pub steps: usize,
    pub probs: Vec<f32>,
}

/// A recognized line, with its box in the coordinates of the input image.
#[derive(Clone, Debug, PartialEq)]
pub struct TextLine {
    pub quad: Quad,
    pub score: f64,
    pub text: String,
}

/// Time spent per stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Resizing, normalizing and running the detector.
    pub det: Duration,
    /// DB post-processing, sorting and cropping.
    pub postprocess: Duration,
    /// Batching, running the recognizer and decoding.
    pub rec: Duration,
}

/// How boxes map back from the detector's image to the input image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    pub ratio_w: f64,
    pub ratio_h: f64,
    pub pad_top: usize,
}

/// The scaled size for `reduce_max_side` / `increase_min_side`: the limiting
/// side to `limit`, both sides rounded to multiples of 32. `None` when no
/// scaling is due or a side would round to zero.
pub fn side_limit_size(
    width: usize,
    height: usize,
    limit: usize,
    shrink: bool,
) -> Option<(usize, usize)> {
    let due = if shrink {
        width.max(height) > limit
    } else {
        width.min(height) < limit
    };
    if !due {
        return None;
    }
    let side = if shrink {
        width.max(height)
    } else {
        width.min(height)
    };
    let ratio = limit as f64 / side as f64;
    let w = det::round_to_32((width as f64 * ratio) as usize);
    let h = det::round_to_32((height as f64 * ratio) as usize);
    (w > 0 && h > 0).then_some((w, h))
}

/// rapidocr's `preprocess` and `maybe_add_letterbox`: the image the detector
/// and the crops work on, and how to map boxes back.
pub fn prepare(img: &BgrImage) -> (BgrImage, Placement) {
    let mut out = img.clone();
    let (mut ratio_w, mut ratio_h) = (1.0, 1.0);
    for (limit, shrink) in [(MAX_SIDE_LEN, true), (MIN_SIDE_LEN, false)] {
        if let Some((w, h)) = side_limit_size(out.width, out.height, limit, shrink) {
            // rapidocr keeps only the last step's ratios; composing them keeps
            // boxes right when both steps apply (extreme aspect ratios).
            ratio_w *= out.width as f64 / w as f64;
            ratio_h *= out.height as f64 / h as f64;
            out = out.resize(w, h);
        }
    }
    let (w, h) = (out.width, out.height);
    let mut pad_top = 0;
    if h <= MIN_HEIGHT || w as f64 / h as f64 > WIDTH_HEIGHT_RATIO as f64 {
        let new_h = (w / WIDTH_HEIGHT_RATIO).max(MIN_HEIGHT) * 2;
        pad_top = new_h.abs_diff(h) / 2;
        out = out.pad_vertical(pad_top, pad_top);
    }
    let placement = Placement {
        ratio_w,
        ratio_h,
        pad_top,
    };
    (out, placement)
}

/// `_get_origin_points`: undoes the padding and scaling and clamps to the
/// input image.
pub fn to_input_coords(quad: &Quad, placement: Placement, width: usize, height: usize) -> Quad {
    quad.map(|p| {
        let x = (p.x * placement.ratio_w).clamp(0.0, width as f64);
        let y = ((p.y - placement.pad_top as f64) * placement.ratio_h).clamp(0.0, height as f64);
        // rapidocr computes these in float32.
        Point::new(f64::from(x as f32), f64::from(y as f32))
    })
}

/// Detects and recognizes the text lines of an image, in reading order.
pub fn run<E: Engine>(
    img: &BgrImage,
    engine: &mut E,
    dict: &Dictionary,
) -> Result<(Vec<TextLine>, Timings), E::Error> {
    let mut timings = Timings::default();
    let start = Instant::now();
    let (work, placement) = prepare(img);
    let Some((dw, dh)) = det::input_size(work.width, work.height) else {
        return Ok((Vec::new(), timings));
    };
    let input = det::normalize(&work.resize(dw, dh));
    let prob = engine.detect(&input, dw, dh)?;
    timings.det = start.elapsed();

    let start = Instant::now();
    let detections = det::boxes_from_map(&prob, dw, dh, work.width, work.height);
    let quads = det::sort_boxes(det::filter_boxes(detections, work.width, work.height));
    let (quads, crops): (Vec<Quad>, Vec<BgrImage>) = quads
        .into_iter()
        .filter_map(|q| work.rotate_crop(&q).map(|c| (q, c)))
        .unzip();
    timings.postprocess = start.elapsed();

    let start = Instant::now();
    let mut results = vec![(String::new(), 0.0); crops.len()];
    let order = rec::batch_order(&crops);
    for batch in order.chunks(rec::BATCH) {
        let images: Vec<&BgrImage> = batch.iter().map(|&i| &crops[i]).collect();
        let (input, width) = rec::batch_input(&images);
        let out = engine.recognize(&input, batch.len(), width)?;
        let per_crop = out.steps * dict.num_classes();
        assert_eq!(
            out.probs.len(),
            batch.len() * per_crop,
            "Engine::recognize output size"
        );
        if per_crop == 0 {
            continue;
        }
        for (&i, probs) in batch.iter().zip(out.probs.chunks_exact(per_crop)) {
            results[i] = rec::ctc_decode(probs, out.steps, dict.num_classes(), dict);
        }
    }
    timings.rec = start.elapsed();

    let lines = quads
        .iter()
        .zip(results)
        .filter(|(_, (_, score))| *score >= TEXT_SCORE)
        .map(|(quad, (text, score))| TextLine {
            quad: to_input_coords(quad, placement, img.width, img.height),
            score,
            text,
        })
        .collect();
    Ok((lines, timings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_limits() {
        // 4000 x 1000 halves to 2000 x 500; 2000 / 32 = 62.5 rounds to even.
        assert_eq!(
            side_limit_size(4000, 1000, MAX_SIDE_LEN, true),
            Some((1984, 512))
        );
        assert_eq!(side_limit_size(1999, 1000, MAX_SIDE_LEN, true), None);
        assert_eq!(
            side_limit_size(200, 20, MIN_SIDE_LEN, false),
            Some((288, 32))
        );
        assert_eq!(side_limit_size(200, 30, MIN_SIDE_LEN, false), None);
    }

    #[test]
    fn letterbox_for_wide_or_low_images() {
        let img = |w: usize, h: usize| BgrImage::new(w, h, vec![9; w * h * 3]);
        // 800 x 50 is 16:1: new_h = max(100, 30) * 2 = 200, pad (200 - 50) / 2.
        let (out, p) = prepare(&img(800, 50));
        assert_eq!((out.width, out.height, p.pad_top), (800, 200, 75));
        assert_eq!(&out.data[..3], &[0, 0, 0]);
        assert_eq!(&out.data[75 * 800 * 3..][..3], &[9, 9, 9]);
        let (out, p) = prepare(&img(300, 200));
        assert_eq!((out.width, out.height, p.pad_top), (300, 200, 0));
    }

    #[test]
    fn boxes_map_back_to_the_input() {
        let placement = Placement {
            ratio_w: 2.0,
            ratio_h: 0.5,
            pad_top: 10,
        };
        let q = [
            Point::new(-1.0, 12.0),
            Point::new(40.0, 12.0),
            Point::new(40.0, 30.0),
            Point::new(-1.0, 30.0),
        ];
        let out = to_input_coords(&q, placement, 70, 100);
        assert_eq!(out[0], Point::new(0.0, 1.0));
        assert_eq!(out[2], Point::new(70.0, 10.0));
    }

    /// Canned networks: one bright band in the map, and "ab" for every crop.
    struct Fake {
        batches: Vec<(usize, usize)>,
    }

    impl Engine for Fake {
        type Error = String;

        fn detect(
            &mut self,
            _input: &[f32],
            width: usize,
            height: usize,
        ) -> Result<Vec<f32>, String> {
            Ok((0..width * height)
                .map(|i| {
                    let (x, y) = (i % width, i / width);
                    if (100..1000).contains(&x) && (300..400).contains(&y) {
                        0.9
                    } else {
                        0.0
                    }
                })
                .collect())
        }

        fn recognize(
            &mut self,
            _input: &[f32],
            n: usize,
            width: usize,
        ) -> Result<RecOutput, String> {
            self.batches.push((n, width));
            let steps = 4;
            // blank, a, b, blank over classes [blank, a, b, space].
            let one = [
                1.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0, 0.8, 0.2, 1.0, 0.0, 0.0, 0.0,
            ];
            Ok(RecOutput {
                steps,
                probs: one.repeat(n),
            })
        }
    }

    #[test]
    fn run_wires_detection_to_recognition() {
        let img = BgrImage::new(400, 200, vec![255; 400 * 200 * 3]);
        let mut engine = Fake { batches: vec![] };
        let (lines, _) = run(&img, &mut engine, &Dictionary::parse("a\nb")).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "ab");
        assert!((lines[0].score - 0.85).abs() < 1e-6);
        assert_eq!(engine.batches.len(), 1);
        // Detection runs at 1472 x 736. The band, dilated to x 100..=1000 and
        // y 300..=400, grows by 900 * 100 * 1.6 / 2000 = 72 to x 28..1072 and
        // y 228..472, which is x 8..291, y 62..128 in the 400 x 200 image.
        let q = lines[0].quad;
        let near = |p: Point, x: f64, y: f64| (p.x - x).abs() <= 1.0 && (p.y - y).abs() <= 1.0;
        assert!(near(q[0], 8.0, 62.0) && near(q[2], 291.0, 128.0), "{q:?}");
    }
}
