//! Text detection around the PP-OCRv4 DB network: rapidocr's
//! `DetPreProcess`, `DBPostProcess` (score mode `fast`, with dilation),
//! `filter_tag_det_res` and `sorted_boxes`, with config.yaml's values.

use crate::contours::find_contours;
use crate::geometry::{IPoint, Point, Quad, fill_poly, mini_box, unclip};
use crate::imgproc::BgrImage;

/// `limit_side_len` with `limit_type: min`: the shorter side is scaled up to this.
pub const LIMIT_SIDE_LEN: usize = 736;
/// Probability above which a pixel counts as text.
pub const THRESH: f32 = 0.3;
/// Minimum mean probability inside a box.
pub const BOX_THRESH: f64 = 0.5;
pub const MAX_CANDIDATES: usize = 1000;
pub const UNCLIP_RATIO: f64 = 1.6;
/// Boxes whose shorter side is below this (in probability-map pixels) are
/// dropped; after unclipping the limit is `MIN_SIZE + 2`.
pub const MIN_SIZE: f64 = 3.0;

/// Python's `int(round(v / 32) * 32)`: round half to even.
pub fn round_to_32(v: usize) -> usize {
    ((v as f64 / 32.0).round_ties_even() * 32.0) as usize
}

/// The network input size for an image: shorter side scaled up to
/// [`LIMIT_SIDE_LEN`] if below it, then both sides rounded to multiples of 32.
/// `None` when a side would round to zero.
pub fn input_size(width: usize, height: usize) -> Option<(usize, usize)> {
    let ratio = if width.min(height) < LIMIT_SIDE_LEN {
        LIMIT_SIDE_LEN as f64 / width.min(height) as f64
    } else {
        1.0
    };
    let w = round_to_32((width as f64 * ratio) as usize);
    let h = round_to_32((height as f64 * ratio) as usize);
    (w > 0 && h > 0).then_some((w, h))
}

/// `(pixel / 255 - 0.5) / 0.5` per channel, in NCHW order with the image's
/// B, G, R channel order.
pub fn normalize(img: &BgrImage) -> Vec<f32> {
    let plane = img.width * img.height;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let v = f64::from(f32::from(px[c]) * (1.0 / 255.0));
            out[c * plane + i] = ((v - 0.5) / 0.5) as f32;
        }
    }
    out
}

/// A detected box, in the coordinates of the image given to the detector.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub quad: Quad,
    pub score: f64,
}

/// DB post-processing of a `width` x `height` probability map into boxes
/// scaled to a `dest_width` x `dest_height` image.
pub fn boxes_from_map(
    prob: &[f32],
    width: usize,
    height: usize,
    dest_width: usize,
    dest_height: usize,
) -> Vec<Detection> {
    assert_eq!(prob.len(), width * height, "probability map size");
    let text: Vec<u8> = prob.iter().map(|&p| u8::from(p > THRESH)).collect();
    let mask = dilate_2x2(&text, width, height);
    let mut boxes = Vec::new();
    for contour in find_contours(&mask, width, height)
        .iter()
        .take(MAX_CANDIDATES)
    {
        let Some((quad, side)) = mini_box(contour) else {
            continue;
        };
        if side < MIN_SIZE {
            continue;
        }
        let score = box_score_fast(prob, width, height, &quad);
        if BOX_THRESH > score {
            continue;
        }
        let Some((quad, side)) = mini_box(&unclip(&quad, UNCLIP_RATIO)) else {
            continue;
        };
        if side < MIN_SIZE + 2.0 {
            continue;
        }
        let scale = |v: f64, from: usize, to: usize| {
            (v / from as f64 * to as f64)
                .round_ties_even()
                .clamp(0.0, to as f64)
        };
        let quad = quad.map(|p| {
            Point::new(
                scale(p.x, width, dest_width),
                scale(p.y, height, dest_height),
            )
        });
        boxes.push(Detection { quad, score });
    }
    boxes
}

/// `cv2.dilate` with a 2x2 kernel of ones (anchor at its centre (1, 1)):
/// a pixel is set when it or its left, upper or upper-left neighbour is.
fn dilate_2x2(mask: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut out = vec![0u8; mask.len()];
    for y in 0..height {
        for x in 0..width {
            let get =
                |dx: usize, dy: usize| x >= dx && y >= dy && mask[(y - dy) * width + x - dx] != 0;
            out[y * width + x] = u8::from(get(0, 0) || get(1, 0) || get(0, 1) || get(1, 1));
        }
    }
    out
}

/// Mean probability inside the box (`box_score_fast`).
fn box_score_fast(prob: &[f32], width: usize, height: usize, quad: &Quad) -> f64 {
    let (xs, ys) = (quad.map(|p| p.x), quad.map(|p| p.y));
    let min = |v: [f64; 4]| v.into_iter().fold(f64::MAX, f64::min);
    let max = |v: [f64; 4]| v.into_iter().fold(f64::MIN, f64::max);
    let clip = |v: f64, n: usize| (v as i64).clamp(0, n as i64 - 1);
    let (xmin, xmax) = (clip(min(xs).floor(), width), clip(max(xs).ceil(), width));
    let (ymin, ymax) = (clip(min(ys).floor(), height), clip(max(ys).ceil(), height));
    let (mw, mh) = ((xmax - xmin + 1) as usize, (ymax - ymin + 1) as usize);
    // numpy's astype(int32) truncates towards zero.
    let pts: Vec<IPoint> = quad
        .iter()
        .map(|p| ((p.x - xmin as f64) as i64, (p.y - ymin as f64) as i64))
        .collect();
    let mask = fill_poly(mw, mh, &pts);
    let (mut sum, mut count) = (0.0f64, 0usize);
    for (i, _) in mask.iter().enumerate().filter(|&(_, &m)| m) {
        let (x, y) = (xmin as usize + i % mw, ymin as usize + i / mw);
        sum += f64::from(prob[y * width + x]);
        count += 1;
    }
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// `filter_tag_det_res`: orders corners clockwise from top-left, clips them
/// to the image (truncating to integers) and drops boxes 3 pixels or less
/// wide or high.
pub fn filter_boxes(detections: Vec<Detection>, width: usize, height: usize) -> Vec<Quad> {
    detections
        .into_iter()
        .filter_map(|d| {
            let quad = order_clockwise(d.quad).map(|p| {
                Point::new(
                    p.x.clamp(0.0, width as f64 - 1.0).trunc(),
                    p.y.clamp(0.0, height as f64 - 1.0).trunc(),
                )
            });
            let w = quad[0].dist(quad[1]) as i64;
            let h = quad[0].dist(quad[3]) as i64;
            (w > 3 && h > 3).then_some(quad)
        })
        .collect()
}

/// `order_points_clockwise`: the two leftmost points (by x, stable) give the
/// top-left and bottom-left corner, the other two the top-right and
/// bottom-right, each pair split by y.
fn order_clockwise(quad: Quad) -> Quad {
    let mut pts = quad;
    pts.sort_by(|a, b| a.x.total_cmp(&b.x));
    let by_y = |a: Point, b: Point| if b.y < a.y { (b, a) } else { (a, b) };
    let (tl, bl) = by_y(pts[0], pts[1]);
    let (tr, br) = by_y(pts[2], pts[3]);
    [tl, tr, br, bl]
}

/// `sorted_boxes`: top to bottom by the top-left corner, then boxes whose
/// top-left corners are less than 10 pixels apart vertically are put left to
/// right.
pub fn sort_boxes(mut boxes: Vec<Quad>) -> Vec<Quad> {
    boxes.sort_by(|a, b| a[0].y.total_cmp(&b[0].y).then(a[0].x.total_cmp(&b[0].x)));
    for i in 0..boxes.len().saturating_sub(1) {
        for j in (0..=i).rev() {
            if (boxes[j + 1][0].y - boxes[j][0].y).abs() < 10.0 && boxes[j + 1][0].x < boxes[j][0].x
            {
                boxes.swap(j, j + 1);
            } else {
                break;
            }
        }
    }
    boxes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quad(x0: f64, y0: f64, x1: f64, y1: f64) -> Quad {
        [
            Point::new(x0, y0),
            Point::new(x1, y0),
            Point::new(x1, y1),
            Point::new(x0, y1),
        ]
    }

    #[test]
    fn input_size_follows_limit_type_min() {
        // 800 x 324: ratio 736 / 324, so 1817 x 736, rounded to 1824 x 736.
        assert_eq!(input_size(800, 324), Some((1824, 736)));
        // Large enough: only rounded. 1000 / 32 = 31.25 -> 992; 784 / 32 = 24.5 -> 768 (even).
        assert_eq!(input_size(1000, 784), Some((992, 768)));
        assert_eq!(round_to_32(48), 64);
        assert_eq!(round_to_32(16), 0);
    }

    #[test]
    fn normalize_is_planar_and_scaled() {
        let img = BgrImage::new(2, 1, vec![0, 255, 51, 255, 0, 0]);
        let x = normalize(&img);
        assert_eq!(x.len(), 6);
        assert_eq!(&x[0..2], &[-1.0, 1.0]);
        assert_eq!(&x[2..4], &[1.0, -1.0]);
        assert!((x[4] - (-0.6)).abs() < 1e-6);
    }

    #[test]
    fn dilation_grows_right_and_down() {
        let mut mask = vec![0u8; 9];
        mask[4] = 1;
        assert_eq!(dilate_2x2(&mask, 3, 3), vec![0, 0, 0, 0, 1, 1, 0, 1, 1]);
    }

    #[test]
    fn one_text_block_becomes_one_unclipped_box() {
        // A 40 x 20 map of 0.05 with a 0.9 block at x 5..=34, y 6..=13. rapidocr's
        // DBPostProcess gives [[0, 2], [80, 2], [80, 38], [0, 38]] with score
        // 0.7811827752939475 for dest size 80 x 40.
        let (w, h) = (40, 20);
        let prob: Vec<f32> = (0..w * h)
            .map(|i| {
                if (5..=34).contains(&(i % w)) && (6..=13).contains(&(i / w)) {
                    0.9
                } else {
                    0.05
                }
            })
            .collect();
        let dets = boxes_from_map(&prob, w, h, 80, 40);
        assert_eq!(dets.len(), 1);
        assert!(
            (dets[0].score - 0.7811827752939475).abs() < 1e-9,
            "{:?}",
            dets[0]
        );
        assert_eq!(dets[0].quad, quad(0.0, 2.0, 80.0, 38.0));
        // Clipped to the last pixel column by filter_boxes.
        assert_eq!(filter_boxes(dets, 80, 40), vec![quad(0.0, 2.0, 79.0, 38.0)]);
    }

    #[test]
    fn weak_and_tiny_regions_are_dropped() {
        // rapidocr finds no box here either.
        let (w, h) = (30, 30);
        let prob: Vec<f32> = (0..w * h)
            .map(|i| match (i % w, i / w) {
                // Above THRESH but below BOX_THRESH on average.
                (2..=20, 2..=8) => 0.35,
                // Strong but 2 pixels high (3 after dilation, short side 2).
                (2..=20, 20..=21) => 0.95,
                _ => 0.0,
            })
            .collect();
        assert!(boxes_from_map(&prob, w, h, w, h).is_empty());
    }

    #[test]
    fn sorting_reads_lines_left_to_right() {
        let a = quad(100.0, 12.0, 150.0, 30.0);
        let b = quad(10.0, 15.0, 80.0, 30.0);
        let c = quad(10.0, 50.0, 80.0, 70.0);
        let d = quad(5.0, 45.0, 8.0, 60.0);
        assert_eq!(sort_boxes(vec![c, a, d, b]), vec![b, a, d, c]);
    }

    #[test]
    fn corners_are_ordered_clockwise() {
        let q = [
            Point::new(50.0, 30.0),
            Point::new(10.0, 12.0),
            Point::new(10.0, 30.0),
            Point::new(50.0, 10.0),
        ];
        assert_eq!(
            order_clockwise(q),
            [
                Point::new(10.0, 12.0),
                Point::new(50.0, 10.0),
                Point::new(50.0, 30.0),
                Point::new(10.0, 30.0)
            ]
        );
    }
}
