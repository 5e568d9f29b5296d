//! Replays every committed fuzz input through its harness: the seed corpus
//! (`corpus/<harness>/`, what scripts/fuzz.sh starts from and grows) and
//! every input a fuzzer ever crashed on (`regressions/<harness>/`, one file
//! per defect, named after it). A regression file that fails again fails
//! this test with its name.

use std::path::Path;

fn replay(root: &Path) -> usize {
    let mut n = 0;
    let Ok(dirs) = std::fs::read_dir(root) else {
        return 0;
    };
    for dir in dirs.flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        let harness = weft_fuzz::by_name(&name)
            .unwrap_or_else(|| panic!("{}: no harness is named {name}", root.display()));
        let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        files.sort_by_key(|f| f.file_name());
        for f in files {
            let bytes = std::fs::read(f.path()).unwrap();
            let outcome = std::panic::catch_unwind(|| harness(&bytes));
            assert!(outcome.is_ok(), "{} failed its harness", f.path().display());
            n += 1;
        }
    }
    n
}

#[test]
fn every_regression_input_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let n = replay(&root);
    assert!(n > 0, "no regression inputs under {}", root.display());
}

#[test]
fn the_seed_corpus_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let n = replay(&root);
    assert!(
        n >= 7,
        "the seed corpus under {} is missing",
        root.display()
    );
}
