//! 8-bit BGR images and the OpenCV operations rapidocr applies to them,
//! reimplemented to give the same pixels (up to OpenCV's fixed-point rounding).

use image::DynamicImage;

use crate::geometry::{Point, Quad, perspective_transform};

/// An interleaved 3-channel image in OpenCV's B, G, R order.
#[derive(Clone, Debug, PartialEq)]
pub struct BgrImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl BgrImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> BgrImage {
        assert_eq!(data.len(), width * height * 3, "BGR buffer size");
        BgrImage {
            width,
            height,
            data,
        }
    }

    fn pixel(&self, x: usize, y: usize) -> &[u8] {
        let i = (y * self.width + x) * 3;
        &self.data[i..i + 3]
    }

    /// Converts a decoded image the way rapidocr's `LoadImage` does after
    /// PIL: gray is replicated, RGB is reordered, and alpha is handled by
    /// `cvt_two_to_three` / `cvt_four_to_three`, quirks included. (Palette
    /// images are expanded to colour first; PIL would hand rapidocr the raw
    /// palette indices.)
    /// Decode a PNG or JPEG file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<BgrImage, image::ImageError> {
        image::load_from_memory(bytes).map(Self::from_dynamic)
    }

    pub fn from_dynamic(img: DynamicImage) -> BgrImage {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let data = match img {
            DynamicImage::ImageLuma8(_) | DynamicImage::ImageLuma16(_) => {
                img.into_luma8().pixels().flat_map(|p| [p[0]; 3]).collect()
            }
            DynamicImage::ImageLumaA8(_) | DynamicImage::ImageLumaA16(_) => img
                .into_luma_alpha8()
                .pixels()
                .flat_map(|p| {
                    // gray where alpha != 0, plus (255 - alpha), saturating.
                    let (g, a) = (p[0], p[1]);
                    [if a != 0 { g } else { 0 }.saturating_add(255 - a); 3]
                })
                .collect(),
            DynamicImage::ImageRgb8(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgb32F(_) => img
                .into_rgb8()
                .pixels()
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect(),
            _ => four_to_three(&img.into_rgba8()),
        };
        BgrImage::new(w, h, data)
    }

    /// `cv2.resize(img, (width, height))` with the default `INTER_LINEAR`:
    /// half-pixel centres, no anti-aliasing, 11-bit fixed-point weights,
    /// rounded as OpenCV's SIMD code path does (bit-exact with cv2 on x86).
    pub fn resize(&self, width: usize, height: usize) -> BgrImage {
        let xs = linear_taps(self.width, width, true);
        let ys = linear_taps(self.height, height, false);
        let mut data = Vec::with_capacity(width * height * 3);
        for &(y0, y1, b0, b1) in &ys {
            for &(x0, x1, a0, a1) in &xs {
                let (p00, p01) = (self.pixel(x0, y0), self.pixel(x1, y0));
                let (p10, p11) = (self.pixel(x0, y1), self.pixel(x1, y1));
                for c in 0..3 {
                    let top = a0 * i64::from(p00[c]) + a1 * i64::from(p01[c]);
                    let bottom = a0 * i64::from(p10[c]) + a1 * i64::from(p11[c]);
                    // OpenCV's vectorized rounding of the vertical pass.
                    let v = (((b0 * (top >> 4)) >> 16) + ((b1 * (bottom >> 4)) >> 16) + 2) >> 2;
                    data.push(v.clamp(0, 255) as u8);
                }
            }
        }
        BgrImage::new(width, height, data)
    }

    /// Adds `top` and `bottom` black rows (`cv2.copyMakeBorder`, constant 0).
    pub fn pad_vertical(&self, top: usize, bottom: usize) -> BgrImage {
        let row = self.width * 3;
        let mut data = vec![0; row * top];
        data.extend_from_slice(&self.data);
        data.resize(data.len() + row * bottom, 0);
        BgrImage::new(self.width, self.height + top + bottom, data)
    }

    /// `np.rot90`: a quarter turn counter-clockwise.
    pub fn rot90(&self) -> BgrImage {
        let (w, h) = (self.height, self.width);
        let mut data = Vec::with_capacity(self.data.len());
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(self.pixel(self.width - 1 - y, x));
            }
        }
        BgrImage::new(w, h, data)
    }

    /// rapidocr's `get_rotate_crop_image`: warps the quad to an upright
    /// rectangle (`cv2.warpPerspective`, `INTER_CUBIC`, `BORDER_REPLICATE`)
    /// and turns it a quarter when it is much taller than wide.
    pub fn rotate_crop(&self, quad: &Quad) -> Option<BgrImage> {
        let [p0, p1, p2, p3] = *quad;
        let w = p0.dist(p1).max(p2.dist(p3)) as usize;
        let h = p0.dist(p3).max(p1.dist(p2)) as usize;
        if w == 0 || h == 0 {
            return None;
        }
        let (wf, hf) = (w as f64, h as f64);
        let target = [
            Point::new(0.0, 0.0),
            Point::new(wf, 0.0),
            Point::new(wf, hf),
            Point::new(0.0, hf),
        ];
        // OpenCV inverts the src -> dst matrix; solving dst -> src directly
        // gives the same map.
        let m = perspective_transform(&target, quad)?;
        let crop = self.warp_cubic(&m, w, h);
        Some(if h as f64 / w as f64 >= 1.5 {
            crop.rot90()
        } else {
            crop
        })
    }

    /// Samples `self` at `m * (x, y, 1)` for every output pixel with bicubic
    /// interpolation (a = -0.75) at full precision, as the OpenCV 5 that
    /// rapidocr installs does (older releases quantized to 1/32 pixel).
    fn warp_cubic(&self, m: &[f64; 9], width: usize, height: usize) -> BgrImage {
        let clamp = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
        let mut data = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                let (xf, yf) = (x as f64, y as f64);
                let wt = m[6] * xf + m[7] * yf + m[8];
                let wt = if wt != 0.0 { 1.0 / wt } else { 0.0 };
                let sx = (m[0] * xf + m[1] * yf + m[2]) * wt;
                let sy = (m[3] * xf + m[4] * yf + m[5]) * wt;
                let (ix, iy) = (sx.floor(), sy.floor());
                let cx = cubic_weights(sx - ix);
                let cy = cubic_weights(sy - iy);
                let (ix, iy) = (ix as i64, iy as i64);
                let mut acc = [0.0f64; 3];
                for (j, wy) in cy.iter().enumerate() {
                    let row = clamp(iy - 1 + j as i64, self.height);
                    for (i, wx) in cx.iter().enumerate() {
                        let p = self.pixel(clamp(ix - 1 + i as i64, self.width), row);
                        for c in 0..3 {
                            acc[c] += wy * wx * f64::from(p[c]);
                        }
                    }
                }
                data.extend(acc.map(|v| v.round().clamp(0.0, 255.0) as u8));
            }
        }
        BgrImage::new(width, height, data)
    }
}

/// rapidocr's `cvt_four_to_three` for RGBA input: keeps colour where alpha is
/// non-zero, then either fills transparent areas with white (an all-black
/// result) or inverts the whole image. The inversion is rapidocr 1.4.4's
/// behaviour for ordinary opaque RGBA files and is kept for parity.
fn four_to_three(rgba: &image::RgbaImage) -> Vec<u8> {
    let masked: Vec<u8> = rgba
        .pixels()
        .flat_map(|p| {
            if p[3] != 0 {
                [p[2], p[1], p[0]]
            } else {
                [0; 3]
            }
        })
        .collect();
    if masked.iter().all(|&v| v == 0) {
        rgba.pixels().flat_map(|p| [255 - p[3]; 3]).collect()
    } else {
        masked.into_iter().map(|v| 255 - v).collect()
    }
}

/// Source taps and weights (scaled by 2048) of `INTER_LINEAR` along one axis.
/// Like OpenCV, columns past the edge take the edge pixel at full weight,
/// while rows past the edge keep their weights and are clamped to the edge
/// row (which rounds differently).
fn linear_taps(src: usize, dst: usize, columns: bool) -> Vec<(usize, usize, i64, i64)> {
    const SCALE: f32 = 2048.0;
    let scale = 1.0 / (dst as f64 / src as f64);
    let last = src as i64 - 1;
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut frac = f - s as f32;
            if columns && s < 0 {
                (s, frac) = (0, 0.0);
            }
            if columns && s >= last {
                (s, frac) = (last, 0.0);
            }
            let w0 = ((1.0 - frac) * SCALE).round_ties_even() as i64;
            (
                s.clamp(0, last) as usize,
                (s + 1).clamp(0, last) as usize,
                w0,
                2048 - w0,
            )
        })
        .collect()
}

/// OpenCV's `interpolateCubic` weights for the four taps around `x` in [0, 1).
fn cubic_weights(x: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let w0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let w2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(width: usize, height: usize, f: impl Fn(usize, usize) -> u8) -> BgrImage {
        let f = &f;
        let data = (0..height)
            .flat_map(|y| (0..width).flat_map(move |x| [f(x, y); 3]))
            .collect();
        BgrImage::new(width, height, data)
    }

    #[test]
    fn resize_matches_opencv_linear() {
        // Expected rows printed by cv2.resize(np.array([row], np.uint8), (w, 1)).
        let row = |img: &BgrImage| img.data.chunks(3).map(|p| p[0]).collect::<Vec<_>>();
        let img = gray(4, 1, |x, _| [0, 100, 200, 250][x]);
        assert_eq!(
            row(&img.resize(8, 1)),
            vec![0, 25, 75, 125, 175, 213, 238, 250]
        );
        assert_eq!(row(&img.resize(2, 1)), vec![50, 225]);
        assert_eq!(row(&img.resize(3, 1)), vec![17, 150, 242]);
        let img = gray(7, 1, |x, _| [0, 100, 200, 250, 17, 33, 99][x]);
        assert_eq!(
            row(&img.resize(11, 1)),
            vec![0, 45, 109, 173, 218, 250, 102, 21, 32, 69, 99]
        );
        assert_eq!(row(&img.resize(5, 1)), vec![20, 160, 250, 23, 86]);
    }

    #[test]
    fn crop_of_an_axis_aligned_quad_copies_pixels() {
        let img = gray(20, 10, |x, y| (x * 10 + y) as u8);
        let quad = [
            Point::new(3.0, 2.0),
            Point::new(13.0, 2.0),
            Point::new(13.0, 6.0),
            Point::new(3.0, 6.0),
        ];
        let crop = img.rotate_crop(&quad).unwrap();
        assert_eq!((crop.width, crop.height), (10, 4));
        assert_eq!(crop.pixel(0, 0)[0], 32);
        assert_eq!(crop.pixel(9, 3)[0], 125);
    }

    #[test]
    fn tall_crops_are_turned() {
        let img = gray(10, 30, |x, y| (x + y) as u8);
        let quad = [
            Point::new(0.0, 0.0),
            Point::new(4.0, 0.0),
            Point::new(4.0, 20.0),
            Point::new(0.0, 20.0),
        ];
        let crop = img.rotate_crop(&quad).unwrap();
        assert_eq!((crop.width, crop.height), (20, 4));
        // Counter-clockwise: the top-right source pixel (3, 0) lands top-left.
        assert_eq!(crop.pixel(0, 0)[0], 3);
    }

    #[test]
    fn alpha_handling_follows_rapidocr() {
        let la = DynamicImage::ImageLumaA8(
            image::GrayAlphaImage::from_raw(2, 1, vec![10, 0, 10, 255]).unwrap(),
        );
        assert_eq!(
            BgrImage::from_dynamic(la).data,
            vec![255, 255, 255, 10, 10, 10]
        );
        let rgba = DynamicImage::ImageRgba8(
            image::RgbaImage::from_raw(1, 1, vec![10, 20, 30, 255]).unwrap(),
        );
        assert_eq!(BgrImage::from_dynamic(rgba).data, vec![225, 235, 245]);
    }
}
