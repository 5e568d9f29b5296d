//! Plane geometry behind DB post-processing, reproducing the OpenCV,
//! shapely and pyclipper calls rapidocr makes: `cv2.minAreaRect` +
//! `cv2.boxPoints` (through `get_mini_boxes`), polygon area and perimeter,
//! `pyclipper` round-joined offsetting (`unclip`), and `cv2.fillPoly`.
//!
//! `fillPoly` and the offsetting are bit-exact ports. The minimum-area
//! rectangle is solved exactly in f64, whereas OpenCV runs its rotating
//! calipers in f32 over a hull whose starting vertex depends on the contour's
//! point order: corners can differ from OpenCV's in the last float32 bits
//! (which matters where rapidocr truncates them to integers), and between
//! rectangles of equal area (symmetric blobs) another one may be picked. On
//! text-line regions the resulting boxes agree; box scores can differ in the
//! third decimal.

/// A point with sub-pixel coordinates (x right, y down).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    pub const fn new(x: f64, y: f64) -> Point {
        Point { x, y }
    }

    pub fn dist(self, other: Point) -> f64 {
        (self.x - other.x).hypot(self.y - other.y)
    }
}

/// A text box: top-left, top-right, bottom-right, bottom-left.
pub type Quad = [Point; 4];

/// An integer pixel position `(x, y)`.
pub type IPoint = (i64, i64);

fn cross(o: IPoint, a: IPoint, b: IPoint) -> i64 {
    (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
}

/// Convex hull (Andrew's monotone chain), without collinear points.
pub fn convex_hull(points: &[IPoint]) -> Vec<IPoint> {
    let mut pts = points.to_vec();
    pts.sort_unstable();
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let half = |iter: &mut dyn Iterator<Item = IPoint>| {
        let mut chain: Vec<IPoint> = Vec::new();
        for p in iter {
            while chain.len() >= 2 && cross(chain[chain.len() - 2], chain[chain.len() - 1], p) <= 0
            {
                chain.pop();
            }
            chain.push(p);
        }
        // The last point of each half starts the other one.
        chain.pop();
        chain
    };
    let mut hull = half(&mut pts.iter().copied());
    hull.extend(half(&mut pts.iter().rev().copied()));
    hull
}

/// The minimum-area enclosing rectangle of a point set (`cv2.minAreaRect`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RotatedRect {
    pub corners: [Point; 4],
    pub width: f64,
    pub height: f64,
}

/// Rotating calipers over the convex hull: the minimum-area rectangle has a
/// side on a hull edge. `None` for an empty set.
pub fn min_area_rect(points: &[IPoint]) -> Option<RotatedRect> {
    let hull = convex_hull(points);
    let p = |q: IPoint| Point::new(q.0 as f64, q.1 as f64);
    match hull.len() {
        0 => None,
        1 => Some(RotatedRect {
            corners: [p(hull[0]); 4],
            width: 0.0,
            height: 0.0,
        }),
        2 => {
            let (a, b) = (p(hull[0]), p(hull[1]));
            Some(RotatedRect {
                corners: [a, b, b, a],
                width: a.dist(b),
                height: 0.0,
            })
        }
        n => {
            let mut best: Option<(f64, RotatedRect)> = None;
            for i in 0..n {
                let (a, b) = (p(hull[i]), p(hull[(i + 1) % n]));
                let len = a.dist(b);
                let u = Point::new((b.x - a.x) / len, (b.y - a.y) / len);
                let v = Point::new(-u.y, u.x);
                let (mut u0, mut u1, mut v0, mut v1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
                for &q in &hull {
                    let q = p(q);
                    let (pu, pv) = (q.x * u.x + q.y * u.y, q.x * v.x + q.y * v.y);
                    (u0, u1, v0, v1) = (u0.min(pu), u1.max(pu), v0.min(pv), v1.max(pv));
                }
                let area = (u1 - u0) * (v1 - v0);
                if best.as_ref().is_none_or(|(a, _)| area < *a) {
                    let at = |s: f64, t: f64| Point::new(s * u.x + t * v.x, s * u.y + t * v.y);
                    let rect = RotatedRect {
                        corners: [at(u0, v0), at(u1, v0), at(u1, v1), at(u0, v1)],
                        width: u1 - u0,
                        height: v1 - v0,
                    };
                    best = Some((area, rect));
                }
            }
            best.map(|(_, rect)| rect)
        }
    }
}

/// rapidocr's `get_mini_boxes`: the minimum-area rectangle as a [`Quad`]
/// (corners ordered by x, then the left and right pairs by y) and its
/// shorter side.
pub fn mini_box(points: &[IPoint]) -> Option<(Quad, f64)> {
    let rect = min_area_rect(points)?;
    let mut c = rect.corners;
    c.sort_by(|a, b| a.x.total_cmp(&b.x));
    let (tl, bl) = if c[1].y > c[0].y {
        (c[0], c[1])
    } else {
        (c[1], c[0])
    };
    let (tr, br) = if c[3].y > c[2].y {
        (c[2], c[3])
    } else {
        (c[3], c[2])
    };
    Some(([tl, tr, br, bl], rect.width.min(rect.height)))
}

/// Area and perimeter of a simple polygon (what shapely's `Polygon` gives).
pub fn area_and_perimeter(poly: &[Point]) -> (f64, f64) {
    let n = poly.len();
    let (mut twice_area, mut perimeter) = (0.0, 0.0);
    for i in 0..n {
        let (a, b) = (poly[i], poly[(i + 1) % n]);
        twice_area += a.x * b.y - b.x * a.y;
        perimeter += a.dist(b);
    }
    (twice_area.abs() / 2.0, perimeter)
}

/// rapidocr's `unclip`: grows a box by `area * ratio / perimeter` with
/// pyclipper's round joins, returning the offset polygon's vertices.
pub fn unclip(quad: &Quad, ratio: f64) -> Vec<IPoint> {
    let (area, perimeter) = area_and_perimeter(quad);
    if perimeter == 0.0 {
        return Vec::new();
    }
    // pyclipper truncates float coordinates to integers.
    let path: Vec<IPoint> = quad.iter().map(|p| (p.x as i64, p.y as i64)).collect();
    offset_round(&path, area * ratio / perimeter)
}

/// Clipper's `Round`: half away from zero.
fn clipper_round(v: f64) -> i64 {
    if v < 0.0 {
        (v - 0.5) as i64
    } else {
        (v + 0.5) as i64
    }
}

/// `ClipperOffset` (Clipper 6.4, as bundled by pyclipper) with `jtRound`,
/// `etClosedPolygon` and the default arc tolerance of 0.25, for one path and a
/// positive `delta`. The final union Clipper runs only cleans up the polygon;
/// it does not change the vertex hull, which is all callers use.
fn offset_round(path: &[IPoint], delta: f64) -> Vec<IPoint> {
    // AddPath: drop repeated points; closed paths need three.
    let mut src: Vec<IPoint> = Vec::with_capacity(path.len());
    for &p in path {
        if src.last() != Some(&p) {
            src.push(p);
        }
    }
    while src.len() > 1 && src.first() == src.last() {
        src.pop();
    }
    if src.len() < 3 || delta <= 0.0 {
        return src;
    }
    // FixOrientations: Clipper wants a positive-area (by its sign convention) outer path.
    let area: f64 = (0..src.len())
        .map(|i| {
            let (j, i) = (src[(i + src.len() - 1) % src.len()], src[i]);
            (j.0 + i.0) as f64 * (j.1 - i.1) as f64
        })
        .sum::<f64>()
        * -0.5;
    if area < 0.0 {
        src.reverse();
    }

    const ARC_TOLERANCE: f64 = 0.25;
    let y = ARC_TOLERANCE.min(delta * ARC_TOLERANCE);
    let mut steps = std::f64::consts::PI / (1.0 - y / delta).acos();
    steps = steps.min(delta * std::f64::consts::PI);
    let (sin, cos) = (std::f64::consts::TAU / steps).sin_cos();
    let steps_per_rad = steps / std::f64::consts::TAU;

    let n = src.len();
    let normals: Vec<(f64, f64)> = (0..n)
        .map(|j| {
            let (a, b) = (src[j], src[(j + 1) % n]);
            let (dx, dy) = ((b.0 - a.0) as f64, (b.1 - a.1) as f64);
            let f = 1.0 / dx.hypot(dy);
            (dy * f, -dx * f)
        })
        .collect();

    let mut out = Vec::new();
    let at = |j: usize, nx: f64, ny: f64| {
        (
            clipper_round(src[j].0 as f64 + nx * delta),
            clipper_round(src[j].1 as f64 + ny * delta),
        )
    };
    let mut k = n - 1;
    for j in 0..n {
        let (nk, nj) = (normals[k], normals[j]);
        let mut sin_a = nk.0 * nj.1 - nj.0 * nk.1;
        let cos_a = nk.0 * nj.0 + nk.1 * nj.1;
        if (sin_a * delta).abs() < 1.0 && cos_a > 0.0 {
            // Nearly straight: one point.
            out.push(at(j, nk.0, nk.1));
            k = j;
            continue;
        }
        sin_a = sin_a.clamp(-1.0, 1.0);
        if sin_a * delta < 0.0 {
            // Concave corner.
            out.push(at(j, nk.0, nk.1));
            out.push(src[j]);
            out.push(at(j, nj.0, nj.1));
        } else {
            // DoRound: an arc from the previous edge's normal to this one's.
            let a = sin_a.atan2(cos_a);
            let arc_steps = clipper_round(steps_per_rad * a.abs()).max(1);
            let (mut x, mut y) = nk;
            for _ in 0..arc_steps {
                out.push(at(j, x, y));
                (x, y) = (x * cos - sin * y, x * sin + y * cos);
            }
            out.push(at(j, nj.0, nj.1));
        }
        k = j;
    }
    out
}

/// `cv2.fillPoly(mask, [pts], 1)` for one polygon with integer vertices on a
/// `width` x `height` mask, as OpenCV 4.x/5 draws it: every edge as an
/// 8-connected line, then the scanlines between edge crossings (16.16 fixed
/// point), with edges leaving the mask clipped the way OpenCV clips them.
pub fn fill_poly(width: usize, height: usize, pts: &[IPoint]) -> Vec<bool> {
    const ONE: i64 = 1 << 16;
    let (w, h) = (width as i64, height as i64);
    let mut mask = vec![false; width * height];
    let mut set = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            mask[(y * w + x) as usize] = true;
        }
    };
    struct Edge {
        y0: i64,
        y1: i64,
        x: i64,
        dx: i64,
    }
    let n = pts.len();
    let mut edges = Vec::with_capacity(n);
    for i in 0..n {
        let (p0, p1) = (pts[(i + n - 1) % n], pts[i]);
        draw_line(w, h, p0, p1, &mut set);
        // The crossings follow the part of the edge inside the mask.
        let (mut t0, mut t1) = (p0, p1);
        let (mut c0y, mut c1y) = (p0.1, p1.1);
        if !inside(w, h, t0) || !inside(w, h, t1) {
            clip_line(w, h, &mut t0, &mut t1);
            if t0.1 != t1.1 {
                (c0y, c1y) = (t0.1, t1.1);
            }
        }
        let (c0x, c1x) = (t0.0 * ONE, t1.0 * ONE);
        if p0.1 == p1.1 {
            continue;
        }
        let dx = (c1x - c0x) / (c1y - c0y);
        edges.push(if p0.1 < p1.1 {
            Edge {
                y0: p0.1,
                y1: p1.1,
                x: c0x + (p0.1 - c0y) * dx,
                dx,
            }
        } else {
            Edge {
                y0: p1.1,
                y1: p0.1,
                x: c1x + (p1.1 - c1y) * dx,
                dx,
            }
        });
    }
    if edges.len() < 2 {
        return mask;
    }
    let ends = |e: &Edge| [e.x, e.x + (e.y1 - e.y0) * e.dx];
    let x_min = edges.iter().flat_map(ends).min().unwrap_or(0);
    let x_max = edges.iter().flat_map(ends).max().unwrap_or(0);
    let y_min = edges.iter().map(|e| e.y0).min().unwrap_or(0);
    let y_max = edges.iter().map(|e| e.y1).max().unwrap_or(0);
    if y_max < 0 || y_min >= h || x_max < 0 || x_min >= w * ONE {
        return mask;
    }
    let mut xs = Vec::new();
    for y in y_min.max(0)..y_max.min(h) {
        xs.clear();
        xs.extend(
            edges
                .iter()
                .filter(|e| e.y0 <= y && y < e.y1)
                .map(|e| e.x + (y - e.y0) * e.dx),
        );
        xs.sort_unstable();
        for pair in xs.chunks_exact(2) {
            // Inner pixels only: ceil of the left crossing, floor of the right.
            let (x1, x2) = ((pair[0] + ONE - 1) >> 16, pair[1] >> 16);
            if x1 < w && x2 >= 0 {
                for x in x1.max(0)..=x2.min(w - 1) {
                    set(x, y);
                }
            }
        }
    }
    mask
}

fn inside(w: i64, h: i64, p: IPoint) -> bool {
    (0..w).contains(&p.0) && (0..h).contains(&p.1)
}

/// OpenCV's `clipLine`: moves the end points onto the `w` x `h` image
/// (Cohen-Sutherland style, truncating); false when the line misses it.
fn clip_line(w: i64, h: i64, p1: &mut IPoint, p2: &mut IPoint) -> bool {
    let (right, bottom) = (w - 1, h - 1);
    let code = |p: IPoint| {
        i32::from(p.0 < 0)
            + i32::from(p.0 > right) * 2
            + i32::from(p.1 < 0) * 4
            + i32::from(p.1 > bottom) * 8
    };
    let (mut c1, mut c2) = (code(*p1), code(*p2));
    let shift = |from: i64, to: i64, d_along: i64, d_across: i64| {
        ((to - from) as f64 * d_across as f64 / d_along as f64) as i64
    };
    if c1 & c2 == 0 && c1 | c2 != 0 {
        if c1 & 12 != 0 {
            let a = if c1 < 8 { 0 } else { bottom };
            p1.0 += shift(p1.1, a, p2.1 - p1.1, p2.0 - p1.0);
            p1.1 = a;
            c1 = code(*p1) & 3;
        }
        if c2 & 12 != 0 {
            let a = if c2 < 8 { 0 } else { bottom };
            p2.0 += shift(p2.1, a, p2.1 - p1.1, p2.0 - p1.0);
            p2.1 = a;
            c2 = code(*p2) & 3;
        }
        if c1 & c2 == 0 && c1 | c2 != 0 {
            if c1 != 0 {
                let a = if c1 == 1 { 0 } else { right };
                p1.1 += shift(p1.0, a, p2.0 - p1.0, p2.1 - p1.1);
                p1.0 = a;
                c1 = 0;
            }
            if c2 != 0 {
                let a = if c2 == 1 { 0 } else { right };
                p2.1 += shift(p2.0, a, p2.0 - p1.0, p2.1 - p1.1);
                p2.0 = a;
                c2 = 0;
            }
        }
    }
    c1 | c2 == 0
}

/// OpenCV's 8-connected `Line`: clipped to the image, then a Bresenham walk
/// from the left end point.
fn draw_line(w: i64, h: i64, mut a: IPoint, mut b: IPoint, set: &mut impl FnMut(i64, i64)) {
    if (!inside(w, h, a) || !inside(w, h, b)) && !clip_line(w, h, &mut a, &mut b) {
        return;
    }
    let (a, b) = if b.0 < a.0 { (b, a) } else { (a, b) };
    let dx = b.0 - a.0;
    let sy = if b.1 < a.1 { -1 } else { 1 };
    let dy = (b.1 - a.1).abs();
    // Step along the major axis every time, along the minor one when the
    // error term goes negative.
    let (major, minor, long, short) = if dy > dx {
        ((0, sy), (1, 0), dy, dx)
    } else {
        ((1, 0), (0, sy), dx, dy)
    };
    let mut err = long - 2 * short;
    let (mut x, mut y) = a;
    for _ in 0..=long {
        set(x, y);
        if err < 0 {
            err += 2 * long - 2 * short;
            x += major.0 + minor.0;
            y += major.1 + minor.1;
        } else {
            err -= 2 * short;
            x += major.0;
            y += major.1;
        }
    }
}

/// Solves the homography taking `from[i]` to `to[i]`
/// (`cv2.getPerspectiveTransform`), row-major with `h[8] = 1`.
pub fn perspective_transform(from: &Quad, to: &Quad) -> Option<[f64; 9]> {
    // Eight equations in h0..h7:
    //   u = (h0 x + h1 y + h2) / (h6 x + h7 y + 1)
    //   v = (h3 x + h4 y + h5) / (h6 x + h7 y + 1)
    let mut m = [[0.0f64; 9]; 8];
    for i in 0..4 {
        let (x, y, u, v) = (from[i].x, from[i].y, to[i].x, to[i].y);
        m[i] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u];
        m[i + 4] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v];
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..8 {
        let pivot = (col..8).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col];
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (v, p) in row.iter_mut().zip(pivot_row).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut h = [1.0; 9];
    for (i, row) in m.iter().enumerate() {
        h[i] = row[8] / row[i];
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_drops_inner_and_collinear_points() {
        let pts = [(0, 0), (2, 0), (4, 0), (4, 3), (0, 3), (2, 1), (2, 2)];
        let mut hull = convex_hull(&pts);
        hull.sort_unstable();
        assert_eq!(hull, vec![(0, 0), (0, 3), (4, 0), (4, 3)]);
    }

    #[test]
    fn min_area_rect_of_axis_aligned_block() {
        let pts: Vec<IPoint> = (10..=50).flat_map(|x| [(x, 5), (x, 15)]).collect();
        let (quad, side) = mini_box(&pts).unwrap();
        assert_eq!(side, 10.0);
        let round = |p: Point| (p.x.round() as i64, p.y.round() as i64);
        assert_eq!(quad.map(round), [(10, 5), (50, 5), (50, 15), (10, 15)]);
    }

    #[test]
    fn min_area_rect_of_rotated_rectangle() {
        // A 20 x 5 rectangle rotated by atan(3/4).
        let (u, v) = ((4.0, 3.0), (-3.0, 4.0));
        let pts: Vec<IPoint> = [(0.0, 0.0), (4.0, 0.0), (4.0, 1.0), (0.0, 1.0)]
            .iter()
            .map(|&(s, t): &(f64, f64)| {
                (
                    (100.0 + s * u.0 + t * v.0) as i64,
                    (100.0 + s * u.1 + t * v.1) as i64,
                )
            })
            .collect();
        let rect = min_area_rect(&pts).unwrap();
        let (w, h) = (rect.width.max(rect.height), rect.width.min(rect.height));
        assert!(
            (w - 20.0).abs() < 1e-9 && (h - 5.0).abs() < 1e-9,
            "{rect:?}"
        );
    }

    #[test]
    fn unclip_grows_each_side_by_the_distance() {
        // 100 x 20 box: distance = 2000 * 1.5 / 240 = 12.5.
        let quad = [
            Point::new(0.0, 0.0),
            Point::new(100.0, 0.0),
            Point::new(100.0, 20.0),
            Point::new(0.0, 20.0),
        ];
        let grown = unclip(&quad, 1.5);
        let (quad, side) = mini_box(&grown).unwrap();
        assert!((side - 45.0).abs() <= 1.0, "{side}");
        assert!(
            (quad[0].x + 12.5).abs() <= 1.0 && (quad[2].x - 112.5).abs() <= 1.0,
            "{quad:?}"
        );
    }

    #[test]
    fn unclip_matches_pyclipper() {
        // pyclipper.PyclipperOffset() on [[0.9,0.9],[10.7,0.9],[10.7,5.6],[0.9,5.6]],
        // JT_ROUND, ET_CLOSEDPOLYGON, Execute(2.0).
        // Clipper's final union drops collinear vertices, so compare hulls.
        let quad = [
            Point::new(0.9, 0.9),
            Point::new(10.7, 0.9),
            Point::new(10.7, 5.6),
            Point::new(0.9, 5.6),
        ];
        let path: Vec<IPoint> = quad.iter().map(|p| (p.x as i64, p.y as i64)).collect();
        let mut got = convex_hull(&offset_round(&path, 2.0));
        let mut want = vec![
            (12, -1),
            (12, 5),
            (11, 7),
            (0, 7),
            (-2, 6),
            (-2, 0),
            (-1, -2),
            (10, -2),
        ];
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn fill_poly_matches_opencv() {
        // cv2.fillPoly on a 10 x 8 mask, printed by OpenCV.
        let mask = fill_poly(10, 8, &[(1, 1), (8, 2), (7, 6), (0, 5)]);
        let rows: Vec<String> = mask
            .chunks(10)
            .map(|r| r.iter().map(|&b| if b { '1' } else { '0' }).collect())
            .collect();
        let want = [
            "0000000000",
            "0111100000",
            "0111111110",
            "1111111110",
            "1111111100",
            "1111111100",
            "0000111100",
            "0000000000",
        ];
        assert_eq!(rows, want);
    }

    #[test]
    fn perspective_of_a_translation() {
        let from = [
            Point::new(5.0, 7.0),
            Point::new(15.0, 7.0),
            Point::new(15.0, 9.0),
            Point::new(5.0, 9.0),
        ];
        let to = from.map(|p| Point::new(p.x - 5.0, p.y - 7.0));
        let h = perspective_transform(&from, &to).unwrap();
        let want = [1.0, 0.0, -5.0, 0.0, 1.0, -7.0, 0.0, 0.0, 1.0];
        for (a, b) in h.iter().zip(want) {
            assert!((a - b).abs() < 1e-9, "{h:?}");
        }
    }
}
