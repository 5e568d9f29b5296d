//! Real guest modules built from `modules/` through the runtime API: both
//! ABIs, the upstream `wasi-nn` 0.6 crate, and a deliberately hostile guest.

use std::sync::Arc;
use weft_nn::{Models, Preload};
use weft_runtime::{MemoryOutputPipe, RunOptions, Runtime, RuntimeConfig};
use weft_tests::{Guest, data, module};

fn tiny_models() -> Arc<Models> {
    let p: Preload = format!("tiny:onnx:cpu:{}", data("tiny.onnx").display())
        .parse()
        .unwrap();
    Arc::new(Models::load(&[p], Default::default()).unwrap())
}

/// Run a built guest; returns (exit code, stdout).
fn run(guest: Guest, name: &str, args: &[&str]) -> (i32, String) {
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap();
    let program = rt.load_file(&module(guest, name)).unwrap();
    let out = MemoryOutputPipe::new(1 << 20);
    let code = rt
        .run(
            &program,
            RunOptions {
                args: args.iter().map(|s| s.to_string()).collect(),
                models: tiny_models(),
                stdout: Some(out.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    (code, String::from_utf8_lossy(&out.contents()).into_owned())
}

#[test]
fn core_module_runs_a_preloaded_model() {
    let (code, out) = run(
        Guest::P1,
        "tinyrun",
        &["tiny", "--dims", "1,4", "1", "2", "3", "-4"],
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "3 5 7 -7");
}

#[test]
fn component_runs_the_same_model() {
    let (code, out) = run(
        Guest::P2,
        "tinyrun",
        &["tiny", "--dims", "1,4", "1", "2", "3", "-4"],
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "3 5 7 -7");
}

/// Residency: output 0 bound to input 0 makes each compute feed the next
/// without the guest copying anything: y = 2x + 1 three times over is
/// 8x + 7. wasip1 goes through Weft's `weft_bind_output`; wasip2 hands the
/// output tensor resource back (standard wasi-nn).
#[test]
fn a_bound_output_feeds_the_next_compute_on_both_abis() {
    for guest in [Guest::P1, Guest::P2] {
        let (code, out) = run(
            guest,
            "tinyrun",
            &[
                "tiny",
                "--dims",
                "1,4",
                "--repeat",
                "3",
                "--feed-back",
                "1",
                "2",
                "0",
                "-1",
            ],
        );
        assert_eq!(code, 0, "{guest:?}");
        assert_eq!(out.trim(), "15 23 7 -1", "{guest:?}");
        // Without the binding the input stays, so the result is one step's.
        let (_, out) = run(
            guest,
            "tinyrun",
            &[
                "tiny", "--dims", "1,4", "--repeat", "3", "1", "2", "0", "-1",
            ],
        );
        assert_eq!(out.trim(), "3 5 1 -1", "{guest:?}");
    }
}

#[test]
fn component_loads_model_bytes_through_guest_memory() {
    // `--file` makes the guest read the model and pass its bytes to `load`.
    let dir = data("");
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap();
    for guest in [Guest::P1, Guest::P2] {
        let program = rt.load_file(&module(guest, "tinyrun")).unwrap();
        let out = MemoryOutputPipe::new(1 << 20);
        let code = rt
            .run(
                &program,
                RunOptions {
                    args: [
                        "--file",
                        "/data/tiny.onnx",
                        "--dims",
                        "1,4",
                        "0",
                        "0",
                        "0",
                        "1",
                    ]
                    .map(String::from)
                    .to_vec(),
                    dirs: vec![weft_runtime::DirGrant {
                        host: dir.clone(),
                        guest: "/data".into(),
                        read_only: true,
                    }],
                    stdout: Some(out.clone()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(code, 0, "{guest:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.contents()).trim(),
            "1 1 1 3",
            "{guest:?}"
        );
    }
}

#[test]
fn guest_written_against_upstream_wasi_nn_crate_runs() {
    let (code, out) = run(Guest::P1, "classic", &["0.5", "1", "1.5", "2"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "2 3 4 5");
}

/// Issue 21: wasi-nn held every input a guest set, on as many contexts as
/// it liked, outside its memory cap. Now inputs draw on the instance's
/// budget (`--max-memory`): 64 contexts of 16 MiB each under 256 MiB are
/// refused with `TooLarge` once the budget is spent, and the host carries on.
#[test]
fn inputs_a_guest_sets_count_against_its_memory_cap() {
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..Default::default()
    })
    .unwrap();
    let p: Preload = format!("mlp:onnx:cpu:{}", data("mlp_dynamic_batch.onnx").display())
        .parse()
        .unwrap();
    let models = Arc::new(Models::load(&[p], Default::default()).unwrap());
    let program = rt.load_file(&module(Guest::P1, "hostile")).unwrap();
    let run = |max_memory: usize| {
        let out = MemoryOutputPipe::new(1 << 20);
        let code = rt
            .run(
                &program,
                RunOptions {
                    args: vec!["input_flood".into(), "mlp".into()],
                    models: models.clone(),
                    stdout: Some(out.clone()),
                    limits: weft_runtime::Limits {
                        max_memory,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(code, 0);
        String::from_utf8_lossy(&out.contents()).trim().to_owned()
    };
    assert_eq!(run(256 << 20), "input_flood errno=7");
    // With room for all of it, the same guest is served.
    assert_eq!(run(2 << 30), "input_flood ok");
}

/// Every attack on the witx glue gets the wasi-nn error code it deserves
/// and the host survives to run the next one.
#[test]
fn hostile_guest_gets_error_codes_never_a_crash() {
    const INVALID_ARGUMENT: &str = "errno=1";
    let expected = [
        ("load_builders_oob", INVALID_ARGUMENT),
        ("load_builder_past_memory", INVALID_ARGUMENT),
        ("load_builders_len_huge", INVALID_ARGUMENT),
        ("load_garbage_onnx", INVALID_ARGUMENT),
        ("load_by_name_oob", INVALID_ARGUMENT),
        ("load_by_name_bad_utf8", INVALID_ARGUMENT),
        ("load_by_name_unknown", "errno=8"),
        ("init_bad_graph", INVALID_ARGUMENT),
        ("set_input_tensor_oob", INVALID_ARGUMENT),
        ("set_input_dims_oob", INVALID_ARGUMENT),
        ("set_input_data_oob", INVALID_ARGUMENT),
        ("set_input_bad_ctx", INVALID_ARGUMENT),
        ("set_input_wrong_size", INVALID_ARGUMENT),
        ("set_input_bad_index", INVALID_ARGUMENT),
        ("set_input_bad_type", INVALID_ARGUMENT),
        ("compute_without_inputs", INVALID_ARGUMENT),
        ("get_output_oob", INVALID_ARGUMENT),
        ("get_output_small_buffer", "errno=7"),
        ("get_output_written_oob", INVALID_ARGUMENT),
        ("get_output_before_compute", INVALID_ARGUMENT),
        ("unload_bad_handle", INVALID_ARGUMENT),
        ("finalize_bad_handle", INVALID_ARGUMENT),
        ("double_unload", INVALID_ARGUMENT),
        // 10,000 contexts created and finalized: handles are really freed,
        // or the per-instance cap (1,024 live contexts) would stop it.
        ("leak", "ok"),
    ];
    let (code, out) = run(Guest::P1, "hostile", &["all"]);
    assert_eq!(code, 0, "the hostile guest did not finish:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{out}");
    for ((attack, result), line) in expected.iter().zip(lines) {
        assert_eq!(line, format!("{attack} {result}"));
    }
}
