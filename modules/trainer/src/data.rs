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
