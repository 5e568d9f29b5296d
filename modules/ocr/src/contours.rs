//! The contours DB post-processing needs from
//! `cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)`.
//!
//! rapidocr only uses each contour through its minimum-area rectangle, which
//! depends on the contour's convex hull alone. So instead of tracing borders,
//! each contour is given as a point set with the same hull:
//!
//! * an outer border per 8-connected component of set pixels: the leftmost
//!   and rightmost pixel of every row of the component;
//! * a hole border per 4-connected component of clear pixels that does not
//!   touch the image edge: the set pixels 4-adjacent to the hole (the pixels
//!   OpenCV's border following visits), reduced the same way.
//!
//! The list comes in OpenCV's order: reverse raster order of where each
//! border is first met.

use crate::geometry::IPoint;

/// Per-row extreme x of a region, for rows `top..`.
struct RowSpans {
    top: i64,
    spans: Vec<Option<(i64, i64)>>,
}

impl RowSpans {
    fn new(top: i64) -> RowSpans {
        RowSpans {
            top,
            spans: Vec::new(),
        }
    }

    fn add(&mut self, x: i64, y: i64) {
        let row = (y - self.top) as usize;
        if row >= self.spans.len() {
            self.spans.resize(row + 1, None);
        }
        let span = self.spans[row].get_or_insert((x, x));
        *span = (span.0.min(x), span.1.max(x));
    }

    fn into_points(self) -> Vec<IPoint> {
        let top = self.top;
        self.spans
            .into_iter()
            .enumerate()
            .filter_map(|(row, span)| span.map(|s| (row as i64 + top, s)))
            .flat_map(|(y, (x0, x1))| [(x0, y), (x1, y)])
            .collect()
    }
}

/// Contours of a `width` x `height` binary mask (non-zero = set), each as a
/// point set with the hull of the OpenCV contour.
pub fn find_contours(mask: &[u8], width: usize, height: usize) -> Vec<Vec<IPoint>> {
    assert_eq!(mask.len(), width * height, "mask size");
    let (w, h) = (width as i64, height as i64);
    let at = |x: i64, y: i64| (y * w + x) as usize;
    let inside = |x: i64, y: i64| x >= 0 && y >= 0 && x < w && y < h;
    let set = |x: i64, y: i64| inside(x, y) && mask[at(x, y)] != 0;

    // (first point met in raster order, points).
    let mut found: Vec<((i64, i64), Vec<IPoint>)> = Vec::new();
    let mut seen = vec![false; mask.len()];
    let mut stack = Vec::new();
    for y in 0..h {
        for x in 0..w {
            if seen[at(x, y)] {
                continue;
            }
            let foreground = set(x, y);
            // Flood fill: 8-connected for set pixels, 4-connected for clear ones.
            let neighbours: &[(i64, i64)] = if foreground {
                &[
                    (-1, -1),
                    (0, -1),
                    (1, -1),
                    (-1, 0),
                    (1, 0),
                    (-1, 1),
                    (0, 1),
                    (1, 1),
                ]
            } else {
                &[(0, -1), (-1, 0), (1, 0), (0, 1)]
            };
            // A hole's border starts one row above the hole.
            let mut spans = RowSpans::new(if foreground { y } else { y - 1 });
            let mut touches_edge = false;
            seen[at(x, y)] = true;
            stack.push((x, y));
            while let Some((px, py)) = stack.pop() {
                if foreground {
                    spans.add(px, py);
                }
                for &(dx, dy) in neighbours {
                    let (nx, ny) = (px + dx, py + dy);
                    if !inside(nx, ny) {
                        touches_edge = true;
                    } else if set(nx, ny) == foreground {
                        if !seen[at(nx, ny)] {
                            seen[at(nx, ny)] = true;
                            stack.push((nx, ny));
                        }
                    } else if !foreground {
                        // A set pixel bordering this clear region.
                        spans.add(nx, ny);
                    }
                }
            }
            if foreground {
                found.push(((y, x), spans.into_points()));
            } else if !touches_edge {
                // OpenCV meets a hole at the set pixel left of its first pixel.
                found.push(((y, x - 1), spans.into_points()));
            }
        }
    }
    found.sort_by_key(|&(start, _)| std::cmp::Reverse(start));
    found.into_iter().map(|(_, points)| points).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::convex_hull;

    #[test]
    fn outer_and_hole_borders_like_opencv() {
        // The mask from which cv2.findContours(RETR_LIST) returns, in order,
        // hulls of: hole at (12, 11); hole x 5..=10, y 9..=13; outer x 3..=14,
        // y 8..=15; outer x 10..=11, y 2..=3; outer x 2..=5, y 2..=4.
        let (w, h) = (20usize, 20usize);
        let mut mask = vec![0u8; w * h];
        let mut fill = |x0: usize, x1: usize, y0: usize, y1: usize, v: u8| {
            for y in y0..y1 {
                for x in x0..x1 {
                    mask[y * w + x] = v;
                }
            }
        };
        fill(2, 6, 2, 5, 1);
        fill(10, 12, 2, 4, 1);
        fill(3, 15, 8, 16, 1);
        fill(6, 10, 10, 13, 0);
        fill(12, 13, 11, 12, 0);
        let hulls: Vec<Vec<IPoint>> = find_contours(&mask, w, h)
            .iter()
            .map(|c| {
                let mut hull = convex_hull(c);
                hull.sort_unstable();
                hull
            })
            .collect();
        let want: Vec<Vec<IPoint>> = vec![
            vec![(11, 11), (12, 10), (12, 12), (13, 11)],
            vec![
                (5, 10),
                (5, 12),
                (6, 9),
                (6, 13),
                (9, 9),
                (9, 13),
                (10, 10),
                (10, 12),
            ],
            vec![(3, 8), (3, 15), (14, 8), (14, 15)],
            vec![(10, 2), (10, 3), (11, 2), (11, 3)],
            vec![(2, 2), (2, 4), (5, 2), (5, 4)],
        ];
        assert_eq!(hulls, want);
    }

    #[test]
    fn regions_touching_the_edge_are_no_holes() {
        let mask = [1, 1, 1, 1, 0, 1, 1, 0, 0];
        assert_eq!(find_contours(&mask, 3, 3).len(), 1);
    }
}
