//! What `ocr` prints: one tab-separated line per text box, or JSON.

use std::fmt::Write;

use crate::pipeline::TextLine;

/// Coordinates print as rapidocr's float32 values do: `31` or `30.5`.
fn coord(v: f64) -> f32 {
    v as f32
}

/// `x0,y0,x1,y1,x2,y2,x3,y3<TAB>score<TAB>text` per line, corners clockwise
/// from the top-left.
pub fn to_text(lines: &[TextLine]) -> String {
    let mut out = String::new();
    for line in lines {
        let corners: Vec<String> = line
            .quad
            .iter()
            .map(|p| format!("{},{}", coord(p.x), coord(p.y)))
            .collect();
        let _ = writeln!(
            out,
            "{}\t{:.4}\t{}",
            corners.join(","),
            line.score,
            line.text
        );
    }
    out
}

/// A JSON array of `{"box": [[x, y] x 4], "score": s, "text": t}` objects.
pub fn to_json(lines: &[TextLine]) -> String {
    let mut out = String::from("[");
    for (i, line) in lines.iter().enumerate() {
        let corners: Vec<String> = line
            .quad
            .iter()
            .map(|p| format!("[{}, {}]", coord(p.x), coord(p.y)))
            .collect();
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            out,
            "{sep}\n  {{\"box\": [{}], \"score\": {:.4}, \"text\": {}}}",
            corners.join(", "),
            line.score,
            json_string(&line.text)
        );
    }
    out.push_str(if lines.is_empty() { "]\n" } else { "\n]\n" });
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Point;

    fn line(text: &str) -> TextLine {
        TextLine {
            quad: [
                Point::new(31.0, 33.0),
                Point::new(401.0, 38.0),
                Point::new(400.5, 73.0),
                Point::new(31.0, 68.0),
            ],
            score: 0.96432,
            text: text.to_owned(),
        }
    }

    #[test]
    fn text_lines() {
        assert_eq!(
            to_text(&[line("Weft Sample")]),
            "31,33,401,38,400.5,73,31,68\t0.9643\tWeft Sample\n"
        );
        assert_eq!(to_text(&[]), "");
    }

    #[test]
    fn json_escapes() {
        let json = to_json(&[line("a \"q\" \\ \u{1}é")]);
        assert_eq!(
            json,
            "[\n  {\"box\": [[31, 33], [401, 38], [400.5, 73], [31, 68]], \"score\": 0.9643, \
             \"text\": \"a \\\"q\\\" \\\\ \\u0001é\"}\n]\n"
        );
        assert_eq!(to_json(&[]), "[]\n");
    }
}
