//! Health checks: a sample inference whose outputs must match, compared
//! number by number within a tolerance (or string by string for BYTES).

use serde_json::Value;

/// Compare a V2 response's outputs (as `weft-serve` encodes them) with the
/// expected ones: `{"outputs": [{"name"?, "shape"?, "data": [...]}]}`. An
/// expected output without a name is matched by position. `Err` says
/// which value differs.
pub fn compare(
    actual: &[(String, Vec<u64>, Value)],
    expect: &Value,
    tolerance: f64,
) -> Result<(), String> {
    let wanted = expect["outputs"].as_array().cloned().unwrap_or_default();
    for (i, w) in wanted.iter().enumerate() {
        let found = match w["name"].as_str() {
            Some(name) => actual.iter().find(|(n, _, _)| n == name),
            None => actual.get(i),
        };
        let label = w["name"]
            .as_str()
            .map_or_else(|| format!("#{i}"), |n| format!("'{n}'"));
        let Some((_, shape, data)) = found else {
            return Err(format!(
                "no output {label}; the module returned {}",
                actual
                    .iter()
                    .map(|(n, _, _)| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if let Some(s) = w["shape"].as_array() {
            let s: Vec<u64> = s.iter().filter_map(Value::as_u64).collect();
            if &s != shape {
                return Err(format!(
                    "output {label} has shape {shape:?}, expected {s:?}"
                ));
            }
        }
        let mut got = Vec::new();
        flatten(data, &mut got);
        let mut exp = Vec::new();
        flatten(&w["data"], &mut exp);
        if got.len() != exp.len() {
            return Err(format!(
                "output {label} has {} values, expected {}",
                got.len(),
                exp.len()
            ));
        }
        for (j, (g, e)) in got.iter().zip(&exp).enumerate() {
            let same = match (g.as_f64(), e.as_f64()) {
                (Some(g), Some(e)) => (g - e).abs() <= tolerance * e.abs().max(1.0),
                _ => g == e,
            };
            if !same {
                return Err(format!("output {label}[{j}] is {g}, expected {e}"));
            }
        }
    }
    Ok(())
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|x| flatten(x, out)),
        other => out.push(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn y(data: Value) -> Vec<(String, Vec<u64>, Value)> {
        vec![("y".into(), vec![1, 4], data)]
    }

    #[test]
    fn values_match_within_the_tolerance() {
        let expect = json!({"outputs": [{"name": "y", "data": [3, 5, 7, 9]}]});
        assert!(compare(&y(json!([3.0, 5.0, 7.00001, 9.0])), &expect, 1e-4).is_ok());
        let e = compare(&y(json!([3.0, 5.0, 7.5, 9.0])), &expect, 1e-4).unwrap_err();
        assert!(e.contains("'y'[2] is 7.5, expected 7"), "{e}");
        // Nested expectations flatten the same way, by position.
        let nested = json!({"outputs": [{"shape": [1, 4], "data": [[3, 5, 7, 9]]}]});
        assert!(compare(&y(json!([3, 5, 7, 9])), &nested, 0.0).is_ok());
        let e = compare(
            &y(json!([3, 5, 7, 9])),
            &json!({"outputs": [{"shape": [4], "data": [3, 5, 7, 9]}]}),
            0.0,
        )
        .unwrap_err();
        assert!(e.contains("shape"), "{e}");
        let e = compare(&y(json!([3, 5])), &expect, 0.0).unwrap_err();
        assert!(e.contains("2 values, expected 4"), "{e}");
        let e = compare(
            &y(json!([1])),
            &json!({"outputs": [{"name": "z", "data": [1]}]}),
            0.0,
        )
        .unwrap_err();
        assert!(e.contains("no output 'z'") && e.contains("'y'"), "{e}");
        let words = vec![("t".into(), vec![1], json!(["hello"]))];
        assert!(
            compare(
                &words,
                &json!({"outputs": [{"name": "t", "data": ["hello"]}]}),
                0.0
            )
            .is_ok()
        );
        assert!(
            compare(
                &words,
                &json!({"outputs": [{"name": "t", "data": ["bye"]}]}),
                0.0
            )
            .is_err()
        );
    }
}
