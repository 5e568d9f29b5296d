//! `hostile ATTACK|all [MODEL]`: a deliberately malicious wasm32-wasip1 guest
//! that calls the `wasi_ephemeral_nn` imports with bad pointers, handles,
//! sizes and orderings, to check that the host answers with errnos instead of
//! crashing, hanging or leaking.
//!
//! Prints one line per attack, `NAME errno=N` or `NAME ok` (the call
//! succeeded), or `NAME setup-failed ...` when a step that should work did
//! not. Attacks that need a working model use the preloaded name `tiny`
//! (override with MODEL): one f32 input `x` [1, 4], one f32 output `y` [1, 4].
//! Exits 0 when all attacks ran, i.e. when the host did not kill it.

#[cfg(all(target_arch = "wasm32", target_os = "wasi", target_env = "p1"))]
mod abi;
#[cfg(all(target_arch = "wasm32", target_os = "wasi", target_env = "p1"))]
mod attacks;

use std::process::ExitCode;

#[cfg(all(target_arch = "wasm32", target_os = "wasi", target_env = "p1"))]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(which) = args.first() else {
        eprintln!(
            "usage: hostile ATTACK|all [MODEL]\nattacks: {}",
            attacks::names().join(" ")
        );
        return ExitCode::from(2);
    };
    let model = args.get(1).map_or("tiny", String::as_str);
    let selected = attacks::select(which);
    if selected.is_empty() {
        eprintln!(
            "hostile: unknown attack {which:?}; attacks: all {}",
            attacks::names().join(" ")
        );
        return ExitCode::from(2);
    }
    for attack in selected {
        println!("{} {}", attack.name, (attack.run)(model));
    }
    ExitCode::SUCCESS
}

#[cfg(not(all(target_arch = "wasm32", target_os = "wasi", target_env = "p1")))]
fn main() -> ExitCode {
    eprintln!("hostile: build it for wasm32-wasip1, whose wasi_ephemeral_nn imports it attacks");
    ExitCode::FAILURE
}
