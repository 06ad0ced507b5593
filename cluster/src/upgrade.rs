//! Whether a member's release may take the next minor upgrade, by etcd's own upgrade guides.
//! Only what a guide requires is said: the 3.5 -> 3.6 guide asks every 3.5 member to run a
//! recent patch first (3.5.20 fixed "too many learner members", 3.5.24 to 3.5.26 the stale
//! membership data behind zombie members, and 3.5.32, which the guide names since August
//! 2026, adds `--v2-deprecation=write-only-skip-check` and a WAL-aware `etcdutl check
//! v2store`).

/// The oldest 3.5 patch etcd's 3.5 -> 3.6 upgrade guide accepts.
pub const MIN_3_5_PATCH_FOR_3_6: u32 = 32;

/// `(3, 5, Some(30))` of `3.5.30` (a suffix such as `-rc.1` is ignored), `(3, 6, None)` of
/// `3.6`; `None` when it does not start with two numbers.
pub fn release(version: &str) -> Option<(u32, u32, Option<u32>)> {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next()??, parts.next()??);
    Some((major, minor, parts.next().flatten()))
}

/// Why a member on `version` should be patched before its cluster moves to the next minor
/// version; `None` when no guide asks for anything.
pub fn advice(version: &str) -> Option<String> {
    let (3, 5, Some(patch)) = release(version)? else {
        return None;
    };
    (patch < MIN_3_5_PATCH_FOR_3_6).then(|| {
        format!(
            "etcd's 3.5 -> 3.6 upgrade guide asks for 3.5.{MIN_3_5_PATCH_FOR_3_6} or later on \
             every member first (3.5.26 fixes the membership data behind zombie members); \
             {version} is older"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_read_from_its_version_string() {
        assert_eq!(release("3.5.30"), Some((3, 5, Some(30))));
        assert_eq!(release("3.6"), Some((3, 6, None)));
        assert_eq!(release("3.7.0-rc.1"), Some((3, 7, Some(0))));
        assert_eq!(release("garbage"), None);
    }

    #[test]
    fn only_a_3_5_member_older_than_the_guides_minimum_gets_advice() {
        assert!(advice("3.5.30").is_some_and(|a| a.contains("3.5.32 or later")));
        assert!(advice("3.5.1").is_some());
        for ready in [
            "3.5.32", "3.5.40", "3.6.15", "3.7.2", "3.4.23", "garbage", "",
        ] {
            assert_eq!(advice(ready), None, "{ready}");
        }
    }
}
