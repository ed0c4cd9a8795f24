//! Open files: every accepted connection holds one, and so do the rollout files,
//! state files and outgoing connections. The listeners' connection limits must
//! leave room for the rest, or a flood of connections on one port would stop the
//! probes and the controller with "Too many open files".

use rustix::process::{Resource, getrlimit, setrlimit};

/// Open files kept out of the listeners' reach: rollout and state files, outgoing
/// connections (API server, forwarding, the operator's own traces), the runtime's own.
pub const RESERVED_FILES: usize = 128;

/// The open-files limit, raised first to the hard limit when that is higher (as
/// Go programs do), so a low default soft limit costs no connections. `None`
/// when unlimited or unknown.
pub fn open_files_limit() -> Option<usize> {
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
        && soft < hard
    {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit.current = Some(hard);
        }
    }
    limit.current.and_then(|soft| usize::try_from(soft).ok())
}

/// `wanted` connection limits scaled down, in proportion, so that together with
/// [`RESERVED_FILES`] they fit in `files`; unchanged when they already fit. Each
/// keeps at least one connection.
pub fn fit_connection_limits(wanted: &[usize], files: usize) -> Vec<usize> {
    let room = files.saturating_sub(RESERVED_FILES).max(wanted.len());
    let total: usize = wanted.iter().sum();
    if total <= room {
        return wanted.to_vec();
    }
    wanted
        .iter()
        .map(|&limit| (limit.saturating_mul(room) / total).max(1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_that_fit_are_kept_and_others_scaled_down() {
        assert_eq!(
            fit_connection_limits(&[256, 256, 256, 32], 1024),
            [256, 256, 256, 32]
        );
        let fitted = fit_connection_limits(&[1000, 1000, 500, 32], 1024);
        assert!(
            fitted.iter().sum::<usize>() + RESERVED_FILES <= 1024,
            "{fitted:?}"
        );
        assert_eq!(fitted[0], fitted[1]);
        assert!(fitted[2] < fitted[0] && fitted[3] >= 1, "{fitted:?}");
        assert_eq!(fitted[0], 1000 * (1024 - RESERVED_FILES) / 2532);
        assert_eq!(fit_connection_limits(&[10, 10], 50), [1, 1]);
    }

    #[test]
    fn the_limit_is_read() {
        assert!(open_files_limit().is_none_or(|limit| limit > 0));
    }
}
