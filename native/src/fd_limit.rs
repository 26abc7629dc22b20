//! The open-file limit: every connection costs a file descriptor, and the usual soft
//! limit (1024) is far below both `--max-connections` and the hard limit the operator
//! granted, so the server raises the soft limit to the hard one at start.

/// Files the server holds besides connections: the listener, the state file and its temp
/// file, stdio, the runtime's own.
const FILES_BESIDES_CONNECTIONS: u64 = 64;

/// Raises the limit and logs the result: the figure at debug, a warning if it cannot
/// hold `max_connections` (accepts past it fail and are retried).
pub fn raise_for(max_connections: usize) {
    let limit = match raise_to_hard_limit() {
        Ok(limit) => {
            log::debug!("open-file limit: {limit}");
            limit
        }
        Err((0, err)) => {
            log::warn!("cannot read the open-file limit: {err}");
            return;
        }
        Err((limit, err)) => {
            log::warn!("cannot raise the open-file limit from {limit}: {err}");
            limit
        }
    };
    let needed = (max_connections as u64).saturating_add(FILES_BESIDES_CONNECTIONS);
    if limit < needed {
        log::warn!(
            "the open-file limit ({limit}) is below --max-connections ({max_connections}) plus \
             {FILES_BESIDES_CONNECTIONS}; past it accepting fails, and is retried, until others close"
        );
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit now in
/// force (also when it could not be raised, with the error).
#[cfg(unix)]
pub fn raise_to_hard_limit() -> Result<u64, (u64, std::io::Error)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err((0, std::io::Error::last_os_error()));
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur == limit.rlim_max {
        return Ok(as_u64(before));
    }
    // macOS refuses a soft limit above OPEN_MAX even when the hard one is unlimited.
    #[cfg(target_os = "macos")]
    let target = limit.rlim_max.min(libc::OPEN_MAX as libc::rlim_t);
    #[cfg(not(target_os = "macos"))]
    let target = limit.rlim_max;
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads one `rlimit` through a pointer to a live local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err((as_u64(before), std::io::Error::last_os_error()));
    }
    Ok(as_u64(target))
}

/// Elsewhere there is no such limit to raise.
#[cfg(not(unix))]
pub fn raise_to_hard_limit() -> Result<u64, (u64, std::io::Error)> {
    Ok(u64::MAX)
}

#[cfg(unix)]
#[allow(clippy::useless_conversion)] // rlim_t is u64 on most targets, not on all
fn as_u64(value: libc::rlim_t) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn current() -> libc::rlimit {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise_to_hard_limit`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        limit
    }

    #[test]
    fn a_lowered_soft_limit_is_raised_to_the_hard_one() {
        let start = current();
        let lowered = libc::rlimit {
            rlim_cur: start.rlim_max.min(256),
            rlim_max: start.rlim_max,
        };
        // SAFETY: as in `raise_to_hard_limit`.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        let raised = raise_to_hard_limit().expect("raise the limit");
        let now = current();
        assert_eq!(now.rlim_max, start.rlim_max, "the hard limit is left alone");
        assert_eq!(as_u64(now.rlim_cur), raised);
        #[cfg(not(target_os = "macos"))]
        assert_eq!(now.rlim_cur, now.rlim_max);
    }
}
