//! Command line of the `ocr` binary.

pub const USAGE: &str = "\
usage: ocr IMAGE [--det NAME] [--rec NAME] [--dict PATH] [--json]

Reads the text in a PNG or JPEG image with PP-OCRv4 through wasi-nn.

  --det NAME   detection model preloaded by the host (default: ppocr-det)
  --rec NAME   recognition model preloaded by the host (default: ppocr-rec)
  --dict PATH  character dictionary of the rec model, one per line
               (default: /models/ppocr_keys.txt)
  --json       print a JSON array instead of one tab-separated line per box

The host must preload the models, e.g.
  --nn-preload ppocr-det:onnx:cpu:models/ch_PP-OCRv4_det_infer.onnx
  --nn-preload ppocr-rec:onnx:cpu:models/ch_PP-OCRv4_rec_infer.onnx
(scripts/fetch-models.sh downloads them and writes models/ppocr_keys.txt).";

#[derive(Clone, Debug, PartialEq)]
pub struct Args {
    pub image: String,
    pub det: String,
    pub rec: String,
    pub dict: String,
    pub json: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Run(Args),
    Help,
}

/// Parses the arguments after the program name. Options take their value as
/// the next argument or after `=`.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut image = None;
    let mut det = "ppocr-det".to_owned();
    let mut rec = "ppocr-rec".to_owned();
    let mut dict = "/models/ppocr_keys.txt".to_owned();
    let mut json = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--json" if inline.is_none() => {
                json = true;
                continue;
            }
            "--det" => &mut det,
            "--rec" => &mut rec,
            "--dict" => &mut dict,
            _ if arg.starts_with('-') && arg.len() > 1 => {
                return Err(format!("unknown option {arg}"));
            }
            _ if image.is_none() => {
                image = Some(arg);
                continue;
            }
            _ => {
                return Err(format!(
                    "unexpected argument {arg:?}: only one image is read"
                ));
            }
        };
        *slot = match inline.or_else(|| args.next()) {
            Some(v) if !v.is_empty() => v,
            _ => return Err(format!("{flag} needs a value")),
        };
    }
    let image = image.ok_or("no image given")?;
    Ok(Command::Run(Args {
        image,
        det,
        rec,
        dict,
        json,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_options() {
        let Ok(Command::Run(a)) = parse_strs(&["img.png"]) else {
            panic!()
        };
        assert_eq!(
            (a.det.as_str(), a.rec.as_str(), a.json),
            ("ppocr-det", "ppocr-rec", false)
        );
        assert_eq!(a.dict, "/models/ppocr_keys.txt");
        let Ok(Command::Run(a)) = parse_strs(&[
            "--json", "--det", "d", "x.jpg", "--rec=r", "--dict", "k.txt",
        ]) else {
            panic!()
        };
        assert_eq!(
            a,
            Args {
                image: "x.jpg".into(),
                det: "d".into(),
                rec: "r".into(),
                dict: "k.txt".into(),
                json: true
            }
        );
    }

    #[test]
    fn errors_and_help() {
        assert_eq!(parse_strs(&["--help"]), Ok(Command::Help));
        assert!(parse_strs(&[]).unwrap_err().contains("no image"));
        assert!(parse_strs(&["a.png", "b.png"]).is_err());
        assert!(
            parse_strs(&["a.png", "--det"])
                .unwrap_err()
                .contains("--det needs a value")
        );
        assert!(
            parse_strs(&["a.png", "--bogus"])
                .unwrap_err()
                .contains("unknown option")
        );
    }
}
