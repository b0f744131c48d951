//! Every failure has a name and an exit code (SPEC section 5): 1 usage or
//! configuration (also `run` on a closed period), 2 data, 3 upstream.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A wrong command line, a missing file, an unknown entry id.
    #[error("{0}")]
    Usage(String),
    /// A configuration error, located in its file.
    #[error("{0}")]
    Config(ConfigError),
    /// The period is closed; its entries never change again.
    #[error("period {0} is closed: its entries never change again (later facts become adjustments in the next open period)")]
    Closed(String),
    /// Bad input data (an event line, a missing fx rate, an overflow).
    #[error("{0}")]
    Data(String),
    /// The export API failed or refused us.
    #[error("{0}")]
    Upstream(String),
    #[error("settlement store: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config(_) | Error::Closed(_) => 1,
            Error::Data(_) | Error::Store(_) | Error::Io { .. } => 2,
            Error::Upstream(_) => 3,
        }
    }

    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn data(msg: impl Into<String>) -> Error {
        Error::Data(msg.into())
    }
}

/// `FILE:LINE: KEY: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: key `{}`: {}",
                self.file, self.line, self.key, self.message
            )
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rusqlite::types::FromSqlError> for Error {
    fn from(e: rusqlite::types::FromSqlError) -> Error {
        Error::Data(format!("settlement store: {e}"))
    }
}
