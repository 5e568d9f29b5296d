//! Text recognition around the PP-OCRv4 CRNN network: rapidocr's
//! `TextRecognizer` batching and `resize_norm_img`, and `CTCLabelDecode`.

use crate::imgproc::BgrImage;

/// Input height of the recognition network.
pub const HEIGHT: usize = 48;
/// Narrowest input width (`rec_img_shape: [3, 48, 320]`).
pub const MIN_WIDTH: usize = 320;
/// Crops per network call (`rec_batch_num`).
pub const BATCH: usize = 6;

/// The recogniser's classes: CTC blank, the dictionary characters, and a
/// space appended at the end.
#[derive(Clone, Debug, PartialEq)]
pub struct Dictionary {
    classes: Vec<String>,
}

impl Dictionary {
    /// Parses one character per line, as rapidocr reads the rec model's
    /// `character` metadata (`splitlines`) or a keys file.
    pub fn parse(text: &str) -> Dictionary {
        let mut classes = vec!["blank".to_owned()];
        classes.extend(text.lines().map(str::to_owned));
        classes.push(" ".to_owned());
        Dictionary { classes }
    }

    /// Number of output classes the model must have: characters + 2.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}

/// Crop indices ordered by aspect ratio (width / height, stable), the order
/// rapidocr batches them in.
pub fn batch_order(crops: &[BgrImage]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..crops.len()).collect();
    let ratio = |i: usize| crops[i].width as f64 / crops[i].height as f64;
    order.sort_by(|&a, &b| ratio(a).total_cmp(&ratio(b)));
    order
}

/// Network input for one batch, `[n, 3, 48, width]`: every crop resized to
/// height 48 keeping its aspect ratio, normalized to [-1, 1] and padded with
/// zeros on the right to the widest crop (at least 320). Returns the data and
/// `width`.
pub fn batch_input(crops: &[&BgrImage]) -> (Vec<f32>, usize) {
    let max_ratio = crops
        .iter()
        .map(|c| c.width as f64 / c.height as f64)
        .fold(MIN_WIDTH as f64 / HEIGHT as f64, f64::max);
    let width = (HEIGHT as f64 * max_ratio) as usize;
    let plane = HEIGHT * width;
    let mut out = vec![0.0f32; crops.len() * 3 * plane];
    for (n, crop) in crops.iter().enumerate() {
        let want = (HEIGHT as f64 * (crop.width as f64 / crop.height as f64)).ceil() as usize;
        let resized = crop.resize(want.min(width), HEIGHT);
        let base = n * 3 * plane;
        for y in 0..HEIGHT {
            for x in 0..resized.width {
                let px = &resized.data[(y * resized.width + x) * 3..][..3];
                for c in 0..3 {
                    out[base + c * plane + y * width + x] = (f32::from(px[c]) / 255.0 - 0.5) / 0.5;
                }
            }
        }
    }
    (out, width)
}

/// Greedy CTC decoding of one sequence of `steps` x `classes` probabilities:
/// best class per step, repeats merged, blanks dropped. The score is the mean
/// probability of the kept steps (0 when none are kept).
///
/// `classes` must equal `dict.num_classes()`.
pub fn ctc_decode(probs: &[f32], steps: usize, classes: usize, dict: &Dictionary) -> (String, f64) {
    assert_eq!(probs.len(), steps * classes, "probabilities size");
    let mut text = String::new();
    let (mut sum, mut kept) = (0.0f64, 0usize);
    let mut prev = None;
    for row in probs.chunks_exact(classes) {
        // First maximum wins, like numpy's argmax.
        let (best, p) =
            row.iter().enumerate().fold(
                (0, f32::MIN),
                |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc },
            );
        if best != 0 && prev != Some(best) {
            text.push_str(&dict.classes[best]);
            sum += f64::from(p);
            kept += 1;
        }
        prev = Some(best);
    }
    let score = if kept == 0 { 0.0 } else { sum / kept as f64 };
    (text, score)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict() -> Dictionary {
        Dictionary::parse("a\nb\nc\n")
    }

    /// One-hot-ish rows: `best` gets `p`, the rest share what is left.
    fn rows(seq: &[(usize, f32)], classes: usize) -> Vec<f32> {
        seq.iter()
            .flat_map(|&(best, p)| {
                (0..classes).map(move |c| {
                    if c == best {
                        p
                    } else {
                        (1.0 - p) / (classes - 1) as f32
                    }
                })
            })
            .collect()
    }

    #[test]
    fn dictionary_adds_blank_and_space() {
        let d = dict();
        assert_eq!(d.num_classes(), 5);
        assert_eq!(d.classes, vec!["blank", "a", "b", "c", " "]);
        assert_eq!(Dictionary::parse("x\r\ny").num_classes(), 4);
    }

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        // a a blank a b b space c blank
        let seq = [
            (1, 0.9),
            (1, 0.8),
            (0, 0.99),
            (1, 0.7),
            (2, 0.6),
            (2, 0.9),
            (4, 0.5),
            (3, 1.0),
            (0, 0.9),
        ];
        let (text, score) = ctc_decode(&rows(&seq, 5), seq.len(), 5, &dict());
        assert_eq!(text, "aab c");
        let want = (0.9 + 0.7 + 0.6 + 0.5 + 1.0) / 5.0;
        assert!((score - want).abs() < 1e-6, "{score}");
    }

    #[test]
    fn ctc_of_only_blanks_is_empty_with_zero_score() {
        let seq = [(0, 0.9), (0, 0.9)];
        assert_eq!(
            ctc_decode(&rows(&seq, 5), 2, 5, &dict()),
            (String::new(), 0.0)
        );
    }

    #[test]
    fn batch_is_as_wide_as_the_widest_crop() {
        let crop = |w: usize, h: usize| BgrImage::new(w, h, vec![255; w * h * 3]);
        let (narrow, wide) = (crop(60, 30), crop(500, 25));
        // Widest ratio 20: int(48 * 20) = 960.
        let (x, width) = batch_input(&[&narrow, &wide]);
        assert_eq!(width, 960);
        assert_eq!(x.len(), 2 * 3 * 48 * 960);
        // The narrow crop becomes 96 wide, white (1.0), then zero padding.
        let row0 = &x[..960];
        assert!(row0[..96].iter().all(|&v| v == 1.0));
        assert!(row0[96..].iter().all(|&v| v == 0.0));
        // Below 320 / 48 the batch stays 320 wide.
        assert_eq!(batch_input(&[&narrow]).1, 320);
    }

    #[test]
    fn batches_go_by_aspect_ratio() {
        let crop = |w: usize, h: usize| BgrImage::new(w, h, vec![0; w * h * 3]);
        let crops = [crop(100, 10), crop(30, 10), crop(60, 20), crop(40, 10)];
        assert_eq!(batch_order(&crops), vec![1, 2, 3, 0]);
    }
}
