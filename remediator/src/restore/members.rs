//! The members a restore writes: from the backup's manifest, or `--member NAME=PEER_URL` for
//! a new topology; and the `snapshot restore` arguments of each.

use std::ffi::OsString;
use std::path::Path;

use crate::backup::Topology;

use super::RestoreError;

/// A member name etcd takes and a directory may carry: letters, digits, `.`, `_`, `-`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `NAME=PEER_URL` as given to `--member`.
pub fn parse_member(given: &str) -> Result<Topology, RestoreError> {
    let bad = |why: &str| RestoreError::BadMember {
        given: given.to_string(),
        why: why.to_string(),
    };
    let (name, url) = given
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=PEER_URL"))?;
    if !valid_name(name) {
        return Err(bad("a member name is letters, digits, '.', '_' and '-'"));
    }
    let parsed = url::Url::parse(url).map_err(|err| bad(&format!("the peer URL: {err}")))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || parsed.port().is_none()
        || parsed.path() != "/" && !parsed.path().is_empty()
    {
        return Err(bad("the peer URL is http(s)://HOST:PORT"));
    }
    Ok(Topology {
        name: name.to_string(),
        peer_urls: vec![url.trim_end_matches('/').to_string()],
    })
}

/// The members to restore: those given, else the manifest's; each name once.
pub fn chosen(given: &[Topology], recorded: &[Topology]) -> Result<Vec<Topology>, RestoreError> {
    let members = if given.is_empty() { recorded } else { given };
    if members.is_empty() {
        return Err(RestoreError::NoTopology);
    }
    for (index, member) in members.iter().enumerate() {
        if !valid_name(&member.name) || member.peer_urls.is_empty() {
            return Err(RestoreError::BadMember {
                given: member.name.clone(),
                why: "a recorded member without a usable name or peer URL".into(),
            });
        }
        if members[..index].iter().any(|m| m.name == member.name) {
            return Err(RestoreError::BadMember {
                given: member.name.clone(),
                why: "named twice".into(),
            });
        }
    }
    Ok(members.to_vec())
}

/// `--initial-cluster`: `name=url` for every peer URL of every member.
pub fn initial_cluster(members: &[Topology]) -> String {
    members
        .iter()
        .flat_map(|m| {
            m.peer_urls
                .iter()
                .map(move |url| format!("{}={url}", m.name))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How the restored keyspace starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Bump {
    /// Added to the backup's revision.
    pub revision: u64,
}

/// `snapshot restore` for one member (the tool's own name comes first, as the caller runs it).
pub fn restore_args(
    snapshot: &Path,
    member: &Topology,
    members: &[Topology],
    token: &str,
    data_dir: &Path,
    bump: Option<Bump>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["snapshot".into(), "restore".into(), snapshot.into()];
    for (flag, value) in [
        ("--name", member.name.clone()),
        ("--initial-cluster", initial_cluster(members)),
        ("--initial-cluster-token", token.to_string()),
        ("--initial-advertise-peer-urls", member.peer_urls.join(",")),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    args.push("--data-dir".into());
    args.push(data_dir.into());
    if let Some(bump) = bump {
        args.push("--bump-revision".into());
        args.push(bump.revision.to_string().into());
        args.push("--mark-compacted".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, url: &str) -> Topology {
        Topology {
            name: name.into(),
            peer_urls: vec![url.into()],
        }
    }

    #[test]
    fn a_member_is_a_plain_name_and_an_http_peer_url() {
        assert_eq!(
            parse_member("m1=https://10.0.0.1:2380").expect("valid"),
            member("m1", "https://10.0.0.1:2380")
        );
        for bad in [
            "m1",
            "=https://10.0.0.1:2380",
            "../m1=https://10.0.0.1:2380",
            "m 1=https://10.0.0.1:2380",
            "m1=10.0.0.1:2380",
            "m1=https://10.0.0.1",
            "m1=unix:///run/etcd",
            "m1=https://10.0.0.1:2380/path",
        ] {
            assert!(parse_member(bad).is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn given_members_replace_the_recorded_ones_and_none_at_all_is_refused() {
        let recorded = [member("a", "http://h:1")];
        let given = [member("b", "http://h:2")];
        assert_eq!(chosen(&given, &recorded).expect("given")[0].name, "b");
        assert_eq!(chosen(&[], &recorded).expect("recorded")[0].name, "a");
        assert!(matches!(chosen(&[], &[]), Err(RestoreError::NoTopology)));
        let twice = [member("b", "http://h:2"), member("b", "http://h:3")];
        assert!(chosen(&twice, &[]).is_err());
    }

    #[test]
    fn every_member_gets_the_same_cluster_and_its_own_name_and_url() {
        let members = [member("m1", "http://a:2380"), member("m2", "http://b:2380")];
        let args = restore_args(
            Path::new("/b/s.db"),
            &members[1],
            &members,
            "prod-restored",
            Path::new("/r/m2"),
            Some(Bump {
                revision: 1_000_000_000,
            }),
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "snapshot restore /b/s.db --name m2 --initial-cluster m1=http://a:2380,m2=http://b:2380 \
             --initial-cluster-token prod-restored --initial-advertise-peer-urls http://b:2380 \
             --data-dir /r/m2 --bump-revision 1000000000 --mark-compacted"
        );
        let unbumped = restore_args(
            Path::new("s"),
            &members[0],
            &members,
            "t",
            Path::new("d"),
            None,
        );
        assert!(!unbumped.iter().any(|a| a == "--mark-compacted"));
    }
}
