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
    // Cargo reruns a build script on every build while a file it watches is missing, and
    // rebuilds this crate and everything above it: watch only the files this checkout has.
    // A branch's ref is a loose file or a line of packed-refs (often only one of the two),
    // and `--git-path` finds both in a worktree's common directory too.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(run(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        let Some(path) = run(&["rev-parse", "--path-format=absolute", "--git-path", &name]) else {
            continue;
        };
        if std::path::Path::new(&path).is_file() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
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
