//! Records the git revision for `etcdmedic_build_info`. Builds without a git checkout (a
//! source tarball, a Docker context without .git) say `unknown` unless ETCDMEDIC_REVISION is
//! set.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ETCDMEDIC_REVISION");
    let revision = std::env::var("ETCDMEDIC_REVISION")
        .ok()
        .or_else(git_revision);
    println!(
        "cargo:rustc-env=ETCDMEDIC_REVISION={}",
        revision.as_deref().unwrap_or("unknown")
    );
}

fn git_revision() -> Option<String> {
    let git_dir = run(&["rev-parse", "--git-dir"])?;
    println!("cargo:rerun-if-changed={git_dir}/HEAD");
    if let Some(reference) = run(&["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo:rerun-if-changed={git_dir}/{reference}");
    }
    println!("cargo:rerun-if-changed={git_dir}/packed-refs");
    run(&["rev-parse", "--short=12", "HEAD"])
}

fn run(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}
