//! CSV data: numeric feature columns, the class label last. A first line
//! that is not numeric is a header.

/// A data set held in memory.
pub struct Data {
    pub features: usize,
    /// Row-major, `rows × features`.
    pub x: Vec<f32>,
    pub labels: Vec<usize>,
}

impl Data {
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// Read `path`; every error names the file and the line.
    pub fn read(path: &str, classes: Option<usize>) -> Result<Data, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let mut data = Data {
            features: 0,
            x: Vec::new(),
            labels: Vec::new(),
        };
        let mut columns = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let numbers: Result<Vec<f32>, _> = cells.iter().map(|c| c.parse::<f32>()).collect();
            let numbers = match numbers {
                Ok(n) => n,
                Err(_) if i == 0 => continue,
                Err(_) => {
                    return Err(format!(
                        "{path}:{}: a cell is not a number: {line:?}",
                        i + 1
                    ));
                }
            };
            let n = *columns.get_or_insert(numbers.len());
            if numbers.len() != n {
                return Err(format!(
                    "{path}:{}: {} columns, but the first row has {n}",
                    i + 1,
                    numbers.len()
                ));
            }
            if n < 2 {
                return Err(format!(
                    "{path}:{}: needs at least one feature column and the label",
                    i + 1
                ));
            }
            let label = numbers[n - 1];
            if label < 0.0 || label.fract() != 0.0 || classes.is_some_and(|k| label as usize >= k) {
                return Err(format!(
                    "{path}:{}: label {label} is not a class{}",
                    i + 1,
                    classes.map_or(String::new(), |k| format!(" (0 to {})", k - 1))
                ));
            }
            if numbers[..n - 1].iter().any(|v| !v.is_finite()) {
                return Err(format!("{path}:{}: a feature is not finite", i + 1));
            }
            data.x.extend_from_slice(&numbers[..n - 1]);
            data.labels.push(label as usize);
            data.features = n - 1;
        }
        if data.labels.is_empty() {
            return Err(format!("{path}: no rows"));
        }
        Ok(data)
    }
}

/// A small deterministic generator (xorshift64*): the same seed gives the
/// same initial weights and data order on every host.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            p.swap(i, j);
        }
        p
    }
}

/// Check a label against the class count; the error names where it is.
fn check_label(
    label: i64,
    classes: Option<usize>,
    at: &dyn Fn() -> String,
) -> Result<usize, String> {
    if label < 0 || classes.is_some_and(|k| label as usize >= k) {
        return Err(format!(
            "{}: label {label} is not a class{}",
            at(),
            classes.map_or(String::new(), |k| format!(" (0 to {})", k - 1))
        ));
    }
    Ok(label as usize)
}

/// An array read from a `.npy` file: its shape and values as `f64`.
pub struct Npy {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

impl Npy {
    /// Read NumPy's format (versions 1 to 3): little-endian or
    /// single-byte `f4`, `f8`, `u1`, `i1`, `i4`, `i8`, `u4`, `u8`, `b1`, C
    /// order. Every error names the file and what is wrong.
    pub fn read(path: &str) -> Result<Npy, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        Npy::parse(&bytes).map_err(|e| format!("{path}: {e}"))
    }

    pub fn parse(bytes: &[u8]) -> Result<Npy, String> {
        let rest = bytes
            .strip_prefix(b"\x93NUMPY")
            .ok_or("not a .npy file (no \\x93NUMPY magic)")?;
        let (&major, rest) = rest.split_first().ok_or("truncated header")?;
        let rest = rest.get(1..).ok_or("truncated header")?;
        let (len, rest) = match major {
            1 => (
                u16::from_le_bytes([
                    *rest.first().ok_or("truncated")?,
                    *rest.get(1).ok_or("truncated")?,
                ]) as usize,
                &rest[2..],
            ),
            2 | 3 => {
                let b: [u8; 4] = rest
                    .get(..4)
                    .ok_or("truncated header")?
                    .try_into()
                    .map_err(|_| "truncated")?;
                (u32::from_le_bytes(b) as usize, &rest[4..])
            }
            v => {
                return Err(format!(
                    "format version {v} is not one NumPy writes (1 to 3)"
                ));
            }
        };
        let header = rest
            .get(..len)
            .ok_or("the header runs past the end of the file")?;
        let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
        let data = &rest[len..];
        let field = |key: &str| -> Result<&str, String> {
            let at = header
                .find(&format!("'{key}'"))
                .ok_or_else(|| format!("the header has no '{key}'"))?;
            let after = header[at + key.len() + 2..].trim_start();
            Ok(after.strip_prefix(':').unwrap_or(after).trim_start())
        };
        let descr = field("descr")?;
        let descr = descr
            .strip_prefix('\'')
            .and_then(|d| d.split('\'').next())
            .ok_or("descr is not a string")?;
        if field("fortran_order")?.starts_with("True") {
            return Err("Fortran-order arrays are not read; save with np.ascontiguousarray".into());
        }
        let shape_text = field("shape")?;
        let shape_text = shape_text
            .strip_prefix('(')
            .and_then(|s| s.split(')').next())
            .ok_or("shape is not a tuple")?;
        let shape: Vec<usize> = shape_text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("shape ({shape_text}) is not sizes"))
            })
            .collect::<Result<_, _>>()?;
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or("the shape overflows")?;
        let (endian, kind) = descr.split_at(1);
        if endian == ">" && !kind.ends_with('1') {
            return Err(format!(
                "big-endian data ({descr}); save little-endian (astype('<f4'))"
            ));
        }
        let size = match kind {
            "f4" | "i4" | "u4" => 4,
            "f8" | "i8" | "u8" => 8,
            "u1" | "i1" | "b1" => 1,
            _ => {
                return Err(format!(
                    "dtype {descr} is not read; use float32, float64 or an integer type"
                ));
            }
        };
        let need = n.checked_mul(size).ok_or("the shape overflows")?;
        if data.len() != need {
            return Err(format!(
                "{} data bytes for shape {shape:?} of {descr} ({need} expected)",
                data.len()
            ));
        }
        let values = data
            .chunks_exact(size)
            .map(|c| match kind {
                "f4" => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                "i4" => f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                "u4" => f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                "f8" => f64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
                "i8" => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64,
                "u8" => u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64,
                "i1" => f64::from(c[0] as i8),
                _ => f64::from(c[0]),
            })
            .collect();
        Ok(Npy { shape, values })
    }
}

impl Data {
    /// Features from `x_path` (`[N, ...]`, any numeric dtype) and integer
    /// labels from `y_path` (`[N]`). Returns the data and one example's
    /// shape (`x`'s shape past its first axis).
    pub fn read_npy(
        x_path: &str,
        y_path: &str,
        classes: Option<usize>,
    ) -> Result<(Data, Vec<usize>), String> {
        let x = Npy::read(x_path)?;
        let y = Npy::read(y_path)?;
        let Some((&rows, example)) = x.shape.split_first() else {
            return Err(format!("{x_path}: a scalar, not rows of examples"));
        };
        if y.shape != [rows] {
            return Err(format!(
                "{y_path}: shape {:?}, but {x_path} has {rows} rows: labels must be [{rows}]",
                y.shape
            ));
        }
        if rows == 0 {
            return Err(format!("{x_path}: no rows"));
        }
        let features: usize = example.iter().product();
        if let Some(i) = x.values.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "{x_path}: row {}: a value is not finite",
                i / features.max(1)
            ));
        }
        let labels = y
            .values
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                if l.fract() != 0.0 {
                    return Err(format!("{y_path}: row {i}: label {l} is not an integer"));
                }
                check_label(l as i64, classes, &|| format!("{y_path}: row {i}"))
            })
            .collect::<Result<_, _>>()?;
        Ok((
            Data {
                features,
                x: x.values.iter().map(|&v| v as f32).collect(),
                labels,
            },
            example.to_vec(),
        ))
    }
}

/// Images in one subfolder per class.
pub struct Images {
    pub data: Data,
    /// The class names: the subfolders, sorted; class `i` is `classes[i]`.
    pub classes: Vec<String>,
    /// One example's shape `[C, H, W]`: `C` 1 (grey) or 3 (RGB).
    pub shape: [usize; 3],
}

impl Images {
    /// Read `dir/CLASS/*.png|jpg|jpeg` (other files are skipped), decoded
    /// to `shape` channels (1: grey, 3: RGB) with values in [0, 1]; every
    /// image must be `shape`'s size. Without `shape`, the first image sets
    /// it (grey if it is grey). `classes` fixes the class names (a test set
    /// must use the training set's); a folder not among them is an error.
    /// A file that does not decode is an error naming it.
    pub fn read(
        dir: &str,
        shape: Option<[usize; 3]>,
        classes: Option<&[String]>,
    ) -> Result<Images, String> {
        let mut folders: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| format!("{dir}: {e}"))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        folders.sort();
        if folders.is_empty() {
            return Err(format!(
                "{dir}: no class folders (one subfolder per class, holding its images)"
            ));
        }
        let names: Vec<String> = match classes {
            Some(known) => {
                if let Some(f) = folders.iter().find(|f| !known.contains(f)) {
                    return Err(format!(
                        "{dir}/{f}: not a class of the training data ({})",
                        known.join(", ")
                    ));
                }
                known.to_vec()
            }
            None => folders.clone(),
        };
        let mut shape = shape;
        let mut data = Data {
            features: 0,
            x: Vec::new(),
            labels: Vec::new(),
        };
        for folder in &folders {
            let label = names.iter().position(|n| n == folder).unwrap_or(0);
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(format!("{dir}/{folder}"))
                .map_err(|e| format!("{dir}/{folder}: {e}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str())
                    })
                })
                .collect();
            files.sort();
            for file in files {
                let name = file.display().to_string();
                let bytes = std::fs::read(&file).map_err(|e| format!("{name}: {e}"))?;
                let img = image::load_from_memory(&bytes)
                    .map_err(|e| format!("{name}: not a readable image ({e})"))?;
                let [c, h, w] = *shape.get_or_insert_with(|| {
                    let c = if img.color().has_color() { 3 } else { 1 };
                    [c, img.height() as usize, img.width() as usize]
                });
                if (img.height() as usize, img.width() as usize) != (h, w) {
                    return Err(format!(
                        "{name}: {}x{} pixels, the images are {w}x{h} (width x height)",
                        img.width(),
                        img.height()
                    ));
                }
                match c {
                    1 => data
                        .x
                        .extend(img.to_luma8().pixels().map(|p| f32::from(p.0[0]) / 255.0)),
                    3 => {
                        let rgb = img.to_rgb8();
                        for ch in 0..3 {
                            data.x
                                .extend(rgb.pixels().map(|p| f32::from(p.0[ch]) / 255.0));
                        }
                    }
                    _ => {
                        return Err(format!(
                            "{c} channels: images are read as 1 (grey) or 3 (RGB)"
                        ));
                    }
                }
                data.labels.push(label);
                data.features = c * h * w;
            }
        }
        let Some(shape) = shape else {
            return Err(format!(
                "{dir}: no .png or .jpg images in its class folders"
            ));
        };
        Ok(Images {
            data,
            classes: names,
            shape,
        })
    }
}

/// Random changes to a batch of images `[N, C, H, W]` (flat), drawn from
/// `rng`: a horizontal flip with probability one half (`flip`), and a
/// shift of up to `shift` pixels each way, the uncovered border zero.
pub fn augment(x: &mut [f32], shape: [usize; 3], rng: &mut Rng, flip: bool, shift: usize) {
    let [c, h, w] = shape;
    let n = c * h * w;
    if n == 0 {
        return;
    }
    let mut out = vec![0.0f32; n];
    for example in x.chunks_exact_mut(n) {
        let mirror = flip && rng.unit() < 0.5;
        let span = 2 * shift as u64 + 1;
        let dy = (rng.next_u64() % span) as isize - shift as isize;
        let dx = (rng.next_u64() % span) as isize - shift as isize;
        out.iter_mut().for_each(|v| *v = 0.0);
        for ch in 0..c {
            for y in 0..h {
                let sy = y as isize - dy;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                for xx in 0..w {
                    let sx = xx as isize - dx;
                    if sx < 0 || sx >= w as isize {
                        continue;
                    }
                    let sx = if mirror {
                        w - 1 - sx as usize
                    } else {
                        sx as usize
                    };
                    out[(ch * h + y) * w + xx] = example[(ch * h + sy as usize) * w + sx];
                }
            }
        }
        example.copy_from_slice(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((header.len() as u16).to_le_bytes());
        b.extend(header.as_bytes());
        b.extend(data);
        b
    }

    #[test]
    fn npy_files_read_and_their_mistakes_are_named() {
        let f: Vec<u8> = [1.5f32, -2.0, 3.0, 4.25]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let a = Npy::parse(&npy("<f4", "(2, 2)", &f)).unwrap();
        assert_eq!(a.shape, [2, 2]);
        assert_eq!(a.values, [1.5, -2.0, 3.0, 4.25]);
        let i: Vec<u8> = [7i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            Npy::parse(&npy("<i8", "(2,)", &i)).unwrap().values,
            [7.0, -1.0]
        );
        assert_eq!(
            Npy::parse(&npy("|u1", "(3,)", &[0, 128, 255]))
                .unwrap()
                .values,
            [0.0, 128.0, 255.0]
        );
        let e = |b: Vec<u8>| Npy::parse(&b).err().unwrap();
        assert!(e(npy("<f4", "(3, 2)", &f)).contains("16 data bytes for shape [3, 2]"));
        assert!(e(npy("<c8", "(1,)", &f)).contains("dtype <c8"));
        assert!(e(npy(">f4", "(4,)", &f)).contains("big-endian"));
        assert!(e(b"PK\x03\x04".to_vec()).contains("not a .npy file"));
        let mut cut = npy("<f4", "(2, 2)", &f);
        cut.truncate(20);
        assert!(e(cut).contains("header runs past"));
    }

    #[test]
    fn a_shift_and_a_flip_move_pixels_where_they_should() {
        // One 1x2x3 image; with `shift` 0 only flips can happen.
        let img = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut seen = std::collections::HashSet::new();
        let mut rng = Rng::new(3);
        for _ in 0..20 {
            let mut x = img.to_vec();
            augment(&mut x, [1, 2, 3], &mut rng, true, 0);
            assert!(x == img || x == [3.0, 2.0, 1.0, 6.0, 5.0, 4.0], "{x:?}");
            seen.insert(x == img);
        }
        assert_eq!(seen.len(), 2, "both flipped and unflipped happen");
        // Shifts keep every value in place or drop it at the border.
        let mut rng = Rng::new(5);
        for _ in 0..20 {
            let mut x = img.to_vec();
            augment(&mut x, [1, 2, 3], &mut rng, false, 1);
            let sum: f32 = x.iter().sum();
            assert!(sum <= 21.0 && x.iter().all(|v| *v == 0.0 || img.contains(v)));
        }
    }
}
