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
                let line = format!("dffmpeg: {}", crate::text::printable(&Chain(e).to_string()));
                crate::log::line(&line);
                eprintln!("{line}");
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

#[cfg(test)]
mod tests {
    //! Every error that carries a cause names it once, however it is printed.

    use std::io;

    use crate::facts::{FactsError, GatherError};
    use crate::inventory::InventoryError;
    use crate::remote::SshError;
    use crate::safefs::SafeFsError;
    use crate::setup::assets::AssetError;
    use crate::setup::keys::KeyError;
    use crate::setup::password::PasswordError;
    use crate::setup::state::StateError;
    use crate::transcode::inputs::InputError;
    use crate::transcode::output::OutputError;
    use crate::transcode::preflight::PreflightError;
    use crate::transcode::probe::ProbeError;

    const CAUSE: &str = "the cause";

    fn cause() -> io::Error {
        io::Error::other(CAUSE)
    }

    fn once<E: std::error::Error + Send + Sync + 'static>(e: E) {
        let plain = e.to_string();
        let chain = super::Chain(&anyhow::Error::new(e).context("outer")).to_string();
        assert_eq!(plain.matches(CAUSE).count(), 1, "{plain}");
        assert_eq!(chain.matches(CAUSE).count(), 1, "{chain}");
    }

    #[test]
    fn each_cause_is_printed_once() {
        let ssh = || SshError::Local { what: "w".into(), cause: cause() };
        let safe = || SafeFsError::Io { path: "/p".into(), cause: cause() };
        once(InventoryError::Read { path: "i".into(), cause: cause() });
        once(safe());
        once(ssh());
        once(GatherError::Run { node: "n".into(), cause: cause() });
        once(OutputError::Dir { path: "/o".into(), cause: cause() });
        once(OutputError::Unsafe(safe()));
        once(OutputError::NotWritable("/o".into(), safe()));
        once(InputError::Io { path: "/i".into(), cause: cause() });
        once(PreflightError::from(cause()));
        once(ProbeError::from(cause()));
        once(AssetError::Read { path: "a".into(), cause: cause() });
        once(KeyError::Io { path: "k".into(), cause: cause() });
        once(KeyError::from(ssh()));
        once(PasswordError::from(ssh()));
        let facts = StateError::from(FactsError::Incomplete);
        assert_eq!(format!("{:#}", anyhow::Error::new(facts)).matches("incomplete").count(), 1);
    }
}
