//! What to run after a restore, for bare etcd, kubeadm and Talos: printed with the restore's
//! own directories, names and URLs.

use std::fmt::Write;

use super::RestorePlan;

/// The text `restore` prints after the data directories are written (or, in a dry run, would
/// be).
pub fn text(plan: &RestorePlan) -> String {
    let mut out = String::new();
    let revision = match plan.bump {
        Some(bump) => format!(
            "revision {} + {} (--bump-revision), everything before it compacted \
             (--mark-compacted): a client watching from a revision the old cluster reached \
             is told \"compacted\" and lists again instead of missing changes",
            plan.revision, bump.revision
        ),
        None => format!(
            "revision {} (--no-bump): clients that saw later revisions of the old cluster \
             (Kubernetes' caches and informers) will miss changes until they list again",
            plan.revision
        ),
    };
    let _ = writeln!(out, "The restored cluster starts at {revision}.");
    let _ = writeln!(
        out,
        "\nFirst stop etcd on every member (and, on a Kubernetes control plane, the \
         kube-apiserver), and move each member's data directory aside.\n"
    );
    let _ = writeln!(out, "Bare etcd (systemd): copy each directory to its member's host as its data directory, then start etcd with its usual flags and these:");
    for member in &plan.members {
        let _ = writeln!(
            out,
            "  {name}: {dir} -> <data dir>; etcd --name {name} --initial-advertise-peer-urls {urls} \
             --initial-cluster {ic} --initial-cluster-token {token}",
            name = member.name,
            dir = member.data_dir.display(),
            urls = member.peer_urls.join(","),
            ic = plan.initial_cluster,
            token = plan.initial_cluster_token,
        );
    }
    let _ = writeln!(
        out,
        "\nkubeadm: on each control-plane node, move /etc/kubernetes/manifests/etcd.yaml and \
         kube-apiserver.yaml out of the directory, replace /var/lib/etcd with that member's \
         directory (the restored membership is in it; the manifest's --initial-cluster flags \
         are not read again), then move etcd.yaml back, wait for every member, and move \
         kube-apiserver.yaml back:"
    );
    for member in &plan.members {
        let _ = writeln!(
            out,
            "  {name}: rsync -a {dir}/ <node>:/var/lib/etcd/",
            name = member.name,
            dir = member.data_dir.display()
        );
    }
    let _ = writeln!(
        out,
        "\nTalos: reset etcd on every control-plane node (talosctl -n <IP> reset --graceful=false \
         --reboot --system-labels-to-wipe=EPHEMERAL), then recover from the checked snapshot on \
         one of them; the others join it. Talos restores the snapshot itself, without the \
         revision bump:\n  talosctl -n <IP> bootstrap --recover-from={}",
        plan.snapshot.display()
    );
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::SystemTime;

    use super::*;
    use crate::restore::{Bump, PlannedMember};

    fn plan(bump: Option<Bump>) -> RestorePlan {
        RestorePlan {
            cluster: "prod".into(),
            destination: "near".into(),
            location: "/b/prod-x-rev9.db".into(),
            file: "prod-x-rev9.db".into(),
            revision: 9,
            created_at: SystemTime::now(),
            cluster_id: None,
            proven: true,
            snapshot: PathBuf::from("/r/prod-x-rev9.db"),
            members: vec![PlannedMember {
                name: "m1".into(),
                peer_urls: vec!["https://10.0.0.1:2380".into()],
                data_dir: PathBuf::from("/r/m1"),
            }],
            initial_cluster: "m1=https://10.0.0.1:2380".into(),
            initial_cluster_token: "prod-restored-t".into(),
            bump,
            tool: PathBuf::from("etcdutl"),
        }
    }

    #[test]
    fn each_platform_gets_the_restores_own_names_and_paths() {
        let text = text(&plan(Some(Bump { revision: 1000 })));
        assert!(
            text.contains("revision 9 + 1000 (--bump-revision)"),
            "{text}"
        );
        assert!(text.contains("etcd --name m1 --initial-advertise-peer-urls https://10.0.0.1:2380 --initial-cluster m1=https://10.0.0.1:2380 --initial-cluster-token prod-restored-t"), "{text}");
        assert!(
            text.contains("rsync -a /r/m1/ <node>:/var/lib/etcd/"),
            "{text}"
        );
        assert!(
            text.contains("bootstrap --recover-from=/r/prod-x-rev9.db"),
            "{text}"
        );
    }

    #[test]
    fn without_the_bump_it_says_what_clients_will_miss() {
        let text = text(&plan(None));
        assert!(text.contains("revision 9 (--no-bump)"), "{text}");
        assert!(text.contains("will miss changes"), "{text}");
    }
}
