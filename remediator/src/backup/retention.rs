//! Which backups the retention removes, the same in a directory and in a bucket.

use std::time::{Duration, SystemTime};

/// Of backups listed oldest first by when they were written, the ones to remove: those
/// beyond the newest `keep`, and those older than `max_age` except the newest. Only called
/// once the newest is verified, so it is never left without one.
pub(crate) fn expired(
    written_oldest_first: &[SystemTime],
    keep: usize,
    max_age: Option<Duration>,
    now: SystemTime,
) -> Vec<usize> {
    let count = written_oldest_first.len();
    (0..count)
        .filter(|&index| {
            let newer = count - 1 - index;
            let too_many = newer >= keep;
            let too_old = newer > 0
                && max_age.is_some_and(|max_age| {
                    now.duration_since(written_oldest_first[index])
                        .unwrap_or_default()
                        > max_age
                });
            too_many || too_old
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_are_kept_and_the_newest_never_expires() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let written: Vec<SystemTime> = [28, 19, 9, 1].iter().map(|d| now - day * *d).collect();
        assert_eq!(expired(&written, 3, None, now), vec![0]);
        assert_eq!(expired(&written, 3, Some(day * 10), now), vec![0, 1]);
        assert_eq!(
            expired(&written, 5, Some(day / 2), now),
            vec![0, 1, 2],
            "all too old, but the newest stays"
        );
        assert_eq!(expired(&written, 1, None, now), vec![0, 1, 2]);
        assert!(expired(&[], 1, Some(day), now).is_empty());
    }
}
