//! The worker's one clock. Times are cut to microseconds, PostgreSQL's precision, so a time
//! published in an event equals the one stored and read back.

use chrono::{DateTime, SubsecRound, Utc};

pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}
