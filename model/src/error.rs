//! The library's error type: one `thiserror` enum, paths last in every message.

use std::path::PathBuf;

/// Everything that can go wrong in the `logonet` library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An argument has the wrong shape, size or value (names the op and what was wrong).
    #[error("{op}: {msg}")]
    InvalidArgument {
        /// The operation or function that rejected the argument.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },

    /// A network cannot take an input of this spatial size.
    #[error("input size {got:?} is not accepted by {model}: {msg}")]
    InputSize {
        /// The model's name.
        model: String,
        /// The spatial size that was given.
        got: Vec<usize>,
        /// What would be accepted.
        msg: String,
    },

    /// A file could not be read or written.
    #[error("{msg}: {cause}: {path}")]
    Io {
        /// What was being done.
        msg: String,
        /// The underlying I/O error (in the message, so it is not repeated as a source in error chains).
        cause: std::io::Error,
        /// The file (last, as the house style wants).
        path: PathBuf,
    },

    /// A file was read but its content is not valid for what it claims to be.
    #[error("{msg}: {path}")]
    Format {
        /// What is wrong with the file.
        msg: String,
        /// The file.
        path: PathBuf,
    },

    /// A checkpoint or bundle does not match what is expected of it.
    #[error("checkpoint: {msg}")]
    Checkpoint {
        /// What is wrong.
        msg: String,
    },

    /// Work was cancelled by the user.
    #[error("cancelled")]
    Cancelled,
}

/// The library's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Self::InvalidArgument {
            op,
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(msg: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self::Format {
            msg: msg.into(),
            path: path.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(msg: impl Into<String>, source: std::io::Error, path: impl Into<PathBuf>) -> Self {
        Self::Io {
            msg: msg.into(),
            cause: source,
            path: path.into(),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, then rename,
/// so an interrupted write never leaves a truncated checkpoint or output behind.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let file_name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("cannot write file", e, path)
    })
}
