//! The exec wrapper on its own (the `ouro` binary has it as `ouro __exec-limits`), so the tests
//! of this crate start steps the way the server does: see `ouro_build::exec::spawn`.

fn main() {
    ouro_build::exec::spawn::run_if_wrapper();
    eprintln!(
        "usage: ouro-exec-wrapper {} RUNNER_PID LIMITS -- PROGRAM [ARGS...]",
        ouro_build::exec::spawn::WRAPPER_ARG
    );
    std::process::exit(126);
}
