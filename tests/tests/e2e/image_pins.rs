//! The Dockerfile's supply chain: every base image pinned by digest, etcd's release tarball
//! checked against a SHA-256 written in the Dockerfile for each architecture (never against a
//! SHA256SUMS fetched beside the tarball), and that release being the one the README says the
//! tests run and the harness's etcd of that minor version really is. The etcd stage's own
//! shell command runs here against tarballs served by a stand-in `curl`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;
use etcdmedic_tests::shipped::etcd_release;

fn dockerfile() -> Result<String> {
    Ok(std::fs::read_to_string(
        repository_root().join("Dockerfile"),
    )?)
}

/// `ARG NAME=value` lines among `lines`, in order.
fn arg_defaults<'a>(lines: impl Iterator<Item = &'a str>) -> BTreeMap<String, String> {
    lines
        .filter_map(|line| line.strip_prefix("ARG "))
        .filter_map(|arg| arg.split_once('='))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

fn is_sha256(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The stage named `name`: its lines after `FROM ... AS name` up to the next `FROM`.
fn stage<'a>(text: &'a str, name: &str) -> Result<Vec<&'a str>> {
    let mut lines = text
        .lines()
        .skip_while(|line| !(line.starts_with("FROM ") && line.ends_with(&format!(" AS {name}"))));
    lines.next().with_context(|| format!("no stage {name}"))?;
    Ok(lines
        .take_while(|line| !line.starts_with("FROM "))
        .collect())
}

/// The stage's `RUN` commands, each continuation (`\` and newline) removed as Docker removes it.
fn run_commands(stage: &[&str]) -> Vec<String> {
    let mut commands = Vec::new();
    let mut open: Option<String> = None;
    for line in stage {
        let text = match (open.take(), line.strip_prefix("RUN ")) {
            (Some(start), _) => start + line,
            (None, Some(rest)) => rest.to_owned(),
            (None, None) => continue,
        };
        match text.strip_suffix('\\') {
            Some(start) => open = Some(start.to_owned()),
            None => commands.push(text),
        }
    }
    commands
}

#[test]
fn every_base_image_is_pinned_by_digest() -> Result<()> {
    let text = dockerfile()?;
    let global = arg_defaults(text.lines().take_while(|line| !line.starts_with("FROM ")));
    let mut images = 0;
    for from in text.lines().filter_map(|line| line.strip_prefix("FROM ")) {
        let reference = from.split_whitespace().next().context("an empty FROM")?;
        let image = match reference
            .strip_prefix("${")
            .and_then(|r| r.strip_suffix('}'))
        {
            Some(arg) => global
                .get(arg)
                .with_context(|| format!("FROM {reference}: no global ARG {arg}"))?
                .as_str(),
            None => reference,
        };
        let (named, digest) = image
            .split_once("@sha256:")
            .with_context(|| format!("FROM {image} is not pinned by digest"))?;
        ensure!(is_sha256(digest), "FROM {image}: the digest is not SHA-256");
        ensure!(
            named.rsplit('/').next().is_some_and(|n| n.contains(':')),
            "FROM {image}: no tag says what the digest is"
        );
        images += 1;
    }
    ensure!(images >= 3, "{images} stages");
    // The build image's Rust is one the workspace accepts.
    let rust = global
        .get("RUST_IMAGE")
        .context("no ARG RUST_IMAGE")?
        .strip_prefix("rust:")
        .and_then(|r| r.split_once('-'))
        .context("RUST_IMAGE is not rust:<version>-<suite>")?
        .0;
    let manifest = std::fs::read_to_string(repository_root().join("Cargo.toml"))?;
    let minimum = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .context("no rust-version in Cargo.toml")?
        .trim_matches('"');
    let parse = |v: &str| -> Result<Vec<u32>> {
        v.split('.')
            .map(|n| n.parse().with_context(|| format!("version {v}")))
            .collect()
    };
    ensure!(
        parse(rust)? >= parse(minimum)?,
        "the image builds with Rust {rust}, the workspace needs {minimum}"
    );
    Ok(())
}

#[test]
fn the_images_etcd_is_a_release_the_readme_names_and_the_tests_run() -> Result<()> {
    let args = arg_defaults(stage(&dockerfile()?, "etcd")?.into_iter());
    let version = args
        .get("ETCD_VERSION")
        .and_then(|v| v.strip_prefix('v'))
        .context("no ARG ETCD_VERSION=v...")?;
    let readme = std::fs::read_to_string(repository_root().join("README.md"))?;
    let tested = readme
        .lines()
        .find_map(|line| line.strip_prefix("| etcd | "))
        .context("the README's Tested with table has no etcd row")?;
    let tested: Vec<&str> = tested
        .split(':')
        .next()
        .unwrap_or_default()
        .split(", ")
        .collect();
    ensure!(
        tested.contains(&version),
        "the image's etcd {version} is not among the README's {tested:?}"
    );
    // The image test drills with the harness's etcd of the same minor version: it must be
    // this very release.
    let harness = etcd_release()?;
    let output = Command::new(harness.etcd()?).arg("--version").output()?;
    let printed = String::from_utf8_lossy(&output.stdout);
    ensure!(
        printed
            .lines()
            .any(|line| line == format!("etcd Version: {version}")),
        "the harness's etcd {} says {printed}",
        harness.prefix()
    );
    for arch in ["AMD64", "ARM64"] {
        let sum = args
            .get(&format!("ETCD_SHA256_{arch}"))
            .with_context(|| format!("no ARG ETCD_SHA256_{arch}"))?;
        ensure!(is_sha256(sum), "ETCD_SHA256_{arch} is not a SHA-256");
    }
    ensure!(
        args.get("ETCD_SHA256_AMD64") != args.get("ETCD_SHA256_ARM64"),
        "one checksum for two architectures"
    );
    Ok(())
}

/// A stand-in `curl` that records each URL and serves `tarball` under the name asked for.
fn fake_curl(bin: &Path, tarball: &Path, log: &Path) -> Result<()> {
    let script = format!(
        "#!/bin/sh\nfor url; do :; done\necho \"$url\" >> '{}'\ncp '{}' \"./${{url##*/}}\"\n",
        log.display(),
        tarball.display()
    );
    let path = bin.join("curl");
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(())
}

/// A tarball laid out as etcd's: one directory holding etcd, etcdutl and etcdctl.
fn etcd_like_tarball(dir: &Path, content: &str) -> Result<std::path::PathBuf> {
    let top = dir.join("etcd-release");
    std::fs::create_dir_all(&top)?;
    for program in ["etcd", "etcdutl", "etcdctl"] {
        std::fs::write(top.join(program), content)?;
    }
    let tarball = dir.join("release.tar.gz");
    crate::support::run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(dir)
            .arg("etcd-release"),
    )?;
    Ok(tarball)
}

fn sha256_of(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(std::fs::read(path)?);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

#[test]
fn the_etcd_stage_installs_only_a_tarball_with_the_pinned_checksum() -> Result<()> {
    let text = dockerfile()?;
    let etcd_stage = stage(&text, "etcd")?;
    let args = arg_defaults(etcd_stage.iter().copied());
    let commands = run_commands(&etcd_stage);
    let [command] = commands.as_slice() else {
        anyhow::bail!("the etcd stage has {} RUN commands", commands.len());
    };
    let scratch = tempfile::Builder::new()
        .prefix("etcdmedic-image-pins-")
        .tempdir()?;
    let out = scratch.path().join("out");
    // The stage installs into the image's /out/; here, into the scratch directory.
    ensure!(
        command.contains(" -t /out/"),
        "the stage does not install into /out/"
    );
    let command = command.replace(" -t /out/", &format!(" -t {}/", out.display()));
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    let log = scratch.path().join("fetched");
    let tarball = etcd_like_tarball(scratch.path(), "genuine")?;
    fake_curl(&bin, &tarball, &log)?;

    let run = |arch: &str, overrides: &[(&str, &str)]| -> Result<Output> {
        let work = tempfile::Builder::new()
            .prefix("work-")
            .tempdir_in(scratch.path())?;
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(&command)
            .current_dir(work.path())
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("TARGETARCH", arch)
            .envs(
                args.iter()
                    .filter(|(name, _)| name.as_str() != "TARGETARCH"),
            )
            .envs(overrides.iter().copied());
        Ok(shell.output()?)
    };

    // The tarball the release would have to serve for the pinned sum to match: ours never
    // does, as a tampered one would not.
    let refused = run("amd64", &[])?;
    ensure!(
        !refused.status.success(),
        "a tarball off the pin was installed"
    );
    ensure!(
        !out.exists(),
        "something was installed from a refused tarball"
    );
    let fetched = std::fs::read_to_string(&log).with_context(|| {
        format!(
            "nothing fetched: {}",
            String::from_utf8_lossy(&refused.stderr)
        )
    })?;
    let version = args.get("ETCD_VERSION").context("no ETCD_VERSION")?;
    ensure!(
        fetched
            == format!(
                "https://github.com/etcd-io/etcd/releases/download/{version}/etcd-{version}-linux-amd64.tar.gz\n"
            ),
        "the stage fetched {fetched:?}: the tarball and nothing else (no SHA256SUMS)"
    );

    // With the pin equal to the tarball's sum, for each architecture, the three programs land.
    let sum = sha256_of(&tarball)?;
    for (arch, pin) in [
        ("amd64", "ETCD_SHA256_AMD64"),
        ("arm64", "ETCD_SHA256_ARM64"),
    ] {
        let installed = run(arch, &[(pin, &sum)])?;
        ensure!(
            installed.status.success(),
            "{arch}: {}",
            String::from_utf8_lossy(&installed.stderr)
        );
        for program in ["etcd", "etcdutl", "etcdctl"] {
            ensure!(
                std::fs::read_to_string(out.join(program))? == "genuine",
                "{arch}: {program} not installed"
            );
        }
        std::fs::remove_dir_all(&out)?;
    }

    // An architecture with no pin is refused, not fetched unchecked.
    let unknown = run("s390x", &[])?;
    ensure!(!unknown.status.success(), "s390x built without a pin");
    ensure!(
        String::from_utf8_lossy(&unknown.stderr).contains("no pinned etcd checksum for s390x"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    Ok(())
}
