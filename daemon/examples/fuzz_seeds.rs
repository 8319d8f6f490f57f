//! Writes the fuzz targets' seed inputs (`agenfleet_daemon::fuzz::seeds`, made from the
//! tests' values) to `DIR/<target>/<name>`: `cargo run -p agenfleet-daemon --example
//! fuzz_seeds -- fuzz/seeds` (what `fuzz/run-all.sh` does first).

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(std::path::PathBuf::from) else {
        eprintln!("usage: fuzz_seeds DIR");
        return std::process::ExitCode::from(2);
    };
    for (target, name, data) in agenfleet_daemon::fuzz::seeds() {
        let d = dir.join(target);
        if let Err(e) =
            std::fs::create_dir_all(&d).and_then(|()| std::fs::write(d.join(&name), data))
        {
            eprintln!("fuzz_seeds: {}/{name}: {e}", d.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}
