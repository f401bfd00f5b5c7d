//! Exit statuses: 0 success, 1 a job or task failed, 2 usage or input error.

use std::fmt;

/// Why a command stopped. Usage errors (bad input, bad inventory, bad
/// arguments) exit 2; failures of the work itself exit 1.
#[derive(Debug)]
pub enum Failure {
    Usage(anyhow::Error),
    Failed(anyhow::Error),
    /// Already reported (e.g. by a recap); just exit 1.
    Reported,
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Failed(_) | Failure::Reported => 1,
        }
    }

    pub fn print(&self) {
        match self {
            // File names and node text in it: no terminal escapes.
            Failure::Usage(e) | Failure::Failed(e) => {
                eprintln!("dffmpeg: {}", crate::text::printable(&Chain(e).to_string()))
            }
            Failure::Reported => {}
        }
    }
}

/// `outer: inner: innermost` on one line.
struct Chain<'a>(&'a anyhow::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

pub type Outcome = Result<(), Failure>;

/// Mark an error as a usage error (exit 2).
pub fn usage<E: Into<anyhow::Error>>(e: E) -> Failure {
    Failure::Usage(e.into())
}

/// Mark an error as a failure of the work (exit 1).
pub fn failed<E: Into<anyhow::Error>>(e: E) -> Failure {
    Failure::Failed(e.into())
}
