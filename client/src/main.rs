//! The `runnel` CLI binary: a thin shell over [`runnel_client::cli`].
fn main() -> std::process::ExitCode {
    runnel_client::cli::main()
}
