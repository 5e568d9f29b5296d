//! The sandbox: exit codes, deadlines, memory caps, fuel, the compile cache
//! and the errors for modules that cannot run. Guests here are tiny WAT
//! programs, so each test states exactly what the guest does.

use std::time::Duration;
use weft_runtime::{CacheOutcome, Limits, RunOptions, Runtime, RuntimeConfig, RuntimeError};

fn runtime(cache: Option<&std::path::Path>, fuel: bool) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: cache.map(Into::into),
        cache_max_bytes: None,
        fuel,
        nn: Default::default(),
    })
    .unwrap()
}

fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap()
}

const EXIT_7: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 7))))"#;

const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l (br $l))))"#;

const GROW_64MIB: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (drop (memory.grow (i32.const 1024)))))"#;

fn opts(limits: Limits) -> RunOptions {
    RunOptions {
        limits,
        ..Default::default()
    }
}

#[test]
fn proc_exit_code_becomes_the_result() {
    let rt = runtime(None, false);
    let p = rt.load("exit.wasm", &wasm(EXIT_7)).unwrap();
    assert_eq!(rt.run(&p, RunOptions::default()).unwrap(), 7);
}

#[test]
fn returning_from_start_is_exit_zero() {
    let rt = runtime(None, false);
    let p = rt
        .load(
            "ok.wasm",
            &wasm(r#"(module (memory (export "memory") 1) (func (export "_start")))"#),
        )
        .unwrap();
    assert_eq!(rt.run(&p, RunOptions::default()).unwrap(), 0);
}

#[test]
fn deadline_stops_an_endless_loop() {
    let rt = runtime(None, false);
    let p = rt.load("spin.wasm", &wasm(SPIN)).unwrap();
    let limits = Limits {
        timeout: Some(Duration::from_millis(100)),
        ..Limits::default()
    };
    let err = rt.run(&p, opts(limits)).unwrap_err();
    assert!(matches!(err, RuntimeError::Timeout { .. }), "{err}");
    assert_eq!(err.exit_code(), 124);
    // The library says what happened; which flag raises the limit is the
    // CLI's to add (it does, see `weft run`'s hints).
    assert!(err.to_string().contains("deadline of 0.1s"), "{err}");
    assert!(!err.to_string().contains("--"), "{err}");
}

#[test]
fn memory_cap_stops_growth_with_a_clear_error() {
    let rt = runtime(None, false);
    let p = rt.load("grow.wasm", &wasm(GROW_64MIB)).unwrap();
    let limits = Limits {
        max_memory: 16 << 20,
        ..Limits::default()
    };
    let err = rt.run(&p, opts(limits)).unwrap_err();
    match err {
        RuntimeError::MemoryLimit { limit, requested } => {
            assert_eq!(limit, 16 << 20);
            assert_eq!(requested, 1025 * 65536);
        }
        other => panic!("expected a memory-limit error, got {other}"),
    }
    // Under a big enough cap the same module runs.
    let limits = Limits {
        max_memory: 128 << 20,
        ..Limits::default()
    };
    assert_eq!(rt.run(&p, opts(limits)).unwrap(), 0);
}

/// Issue 21: the cap was checked per linear memory, so a module with two
/// memories held twice its cap. Now all of a store's memories share it.
#[test]
fn the_memory_cap_covers_all_memories_of_a_store_together() {
    let rt = runtime(None, false);
    // Two memories of 10 MiB (160 pages) each.
    let two = "(module (memory 160) (memory 160) (func (export \"_start\")))";
    let p = rt.load("two.wasm", &wasm(two)).unwrap();
    let limits = Limits {
        max_memory: 16 << 20,
        ..Limits::default()
    };
    let err = rt.run(&p, opts(limits)).unwrap_err();
    match err {
        RuntimeError::MemoryLimit { limit, requested } => {
            assert_eq!(limit, 16 << 20);
            assert_eq!(requested, 320 * 65536);
        }
        other => panic!("expected a memory-limit error, got {other}"),
    }
    let limits = Limits {
        max_memory: 21 << 20,
        ..Limits::default()
    };
    assert_eq!(rt.run(&p, opts(limits)).unwrap(), 0);
}

#[test]
fn fuel_stops_an_endless_loop() {
    let rt = runtime(None, true);
    let p = rt.load("spin.wasm", &wasm(SPIN)).unwrap();
    let limits = Limits {
        fuel: Some(100_000),
        timeout: None,
        ..Limits::default()
    };
    let err = rt.run(&p, opts(limits)).unwrap_err();
    assert!(
        matches!(err, RuntimeError::OutOfFuel { fuel: 100_000 }),
        "{err}"
    );
}

#[test]
fn trap_is_reported_with_its_reason() {
    let rt = runtime(None, false);
    let p = rt
        .load(
            "trap.wasm",
            &wasm(r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#),
        )
        .unwrap();
    let err = rt.run(&p, RunOptions::default()).unwrap_err();
    assert!(matches!(err, RuntimeError::Trap { .. }), "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert_eq!(err.exit_code(), 134);
}

#[test]
fn second_load_skips_cranelift() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = wasm(EXIT_7);
    let first = runtime(Some(dir.path()), false)
        .load("exit.wasm", &bytes)
        .unwrap();
    assert_eq!(first.cache_outcome(), CacheOutcome::Miss);
    // A new engine (as in a new process) with the same settings hits.
    let rt = runtime(Some(dir.path()), false);
    let second = rt.load("exit.wasm", &bytes).unwrap();
    assert_eq!(second.cache_outcome(), CacheOutcome::Hit);
    assert_eq!(rt.run(&second, RunOptions::default()).unwrap(), 7);
    // Different code-generation settings (fuel metering) must not reuse it.
    let fueled = runtime(Some(dir.path()), true)
        .load("exit.wasm", &bytes)
        .unwrap();
    assert_eq!(fueled.cache_outcome(), CacheOutcome::Miss);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn corrupt_cache_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = wasm(EXIT_7);
    runtime(Some(dir.path()), false)
        .load("exit.wasm", &bytes)
        .unwrap();
    let entry = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&entry, b"not a compiled module").unwrap();
    let rt = runtime(Some(dir.path()), false);
    let p = rt.load("exit.wasm", &bytes).unwrap();
    assert_eq!(p.cache_outcome(), CacheOutcome::Miss);
    assert_eq!(rt.run(&p, RunOptions::default()).unwrap(), 7);
}

#[test]
fn non_wasm_is_named_and_nothing_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(Some(dir.path()), false);
    let err = rt.load("notes.txt", b"hello, world").unwrap_err();
    assert!(matches!(err, RuntimeError::NotWasm { .. }), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    let mut broken = b"\0asm\x01\0\0\0".to_vec();
    broken.extend_from_slice(&[0xff; 16]);
    let err = rt.load("broken.wasm", &broken).unwrap_err();
    assert!(matches!(err, RuntimeError::Compile { .. }), "{err}");
    assert!(
        !dir.path().exists() || std::fs::read_dir(dir.path()).unwrap().count() == 0,
        "bad input must leave nothing in the cache"
    );
}

#[test]
fn library_module_without_start_is_refused() {
    let rt = runtime(None, false);
    let err = rt
        .load("lib.wasm", &wasm(r#"(module (func (export "add")))"#))
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NoStart { .. }), "{err}");
    assert!(err.to_string().contains("_start"), "{err}");
}

#[test]
fn unknown_import_is_named() {
    let rt = runtime(None, false);
    let err = rt
        .load(
            "odd.wasm",
            &wasm(r#"(module (import "vendor_gpu" "launch" (func)) (func (export "_start")))"#),
        )
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Link { .. }), "{err}");
    assert!(err.to_string().contains("vendor_gpu"), "{err}");
}

#[test]
fn missing_directory_grant_is_an_error() {
    let rt = runtime(None, false);
    let p = rt.load("exit.wasm", &wasm(EXIT_7)).unwrap();
    let err = rt
        .run(
            &p,
            RunOptions {
                dirs: vec![weft_runtime::DirGrant {
                    host: "/definitely/not/here".into(),
                    guest: "/data".into(),
                    read_only: true,
                }],
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("/definitely/not/here"), "{err}");
}
