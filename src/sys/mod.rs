//! Process and OS facilities with no knowledge of the gateway: clocks, the
//! allocator's purge, the pid file.

pub mod clock;
pub mod heap;
pub mod pidfile;
