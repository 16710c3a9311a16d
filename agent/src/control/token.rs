//! The owner's credential for the admin API, and the peers' shared one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the CLI cannot read the running agent's token; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file holds something else.
    #[error("{} does not hold an admin token: restart `valkey-dr run` to write a new one", .file.display())]
    NotAToken {
        /// The token file.
        file: PathBuf,
    },
    /// The file is the owner's.
    #[error(
        "cannot read the admin token {}: permission denied; only the agent's owner may drive it, so run this command as the agent's user (or root)",
        .file.display()
    )]
    NotTheOwner {
        /// The token file.
        file: PathBuf,
    },
    /// No agent wrote one.
    #[error(
        "no admin token at {}: is `valkey-dr run` running with this config (and its admin server listening)?",
        .file.display()
    )]
    NoAgent {
        /// The token file.
        file: PathBuf,
    },
    /// Any other read error.
    #[error("cannot read the admin token {}", .file.display())]
    Unreadable {
        /// The token file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The owner's credential for the control endpoints: 32 random bytes in hex, made anew at
/// every start and written (mode 0600) to [`crate::layout::token_file`] once the admin server listens.
///
/// A new one at every start means a token copied out of the file stops working at the next
/// restart; nothing else needs it to last, as the CLI reads the file at every call.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<str>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A fresh token from the kernel's random source.
    pub fn generate() -> std::io::Result<Self> {
        use std::io::Read as _;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let mut hex = String::with_capacity(64);
        for b in bytes {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{b:02x}");
        }
        Ok(AdminToken(hex.into()))
    }

    /// The token of the agent running with this `state_dir`, as the CLI reads it. The error
    /// says what to do: start the agent, or run as its user.
    pub fn load(state_dir: &Path) -> Result<Self, TokenError> {
        let file = crate::layout::token_file(state_dir);
        match std::fs::read_to_string(&file) {
            Ok(text) if is_token(text.trim()) => Ok(AdminToken(text.trim().into())),
            Ok(_) => Err(TokenError::NotAToken { file }),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(TokenError::NotTheOwner { file })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(TokenError::NoAgent { file }),
            Err(source) => Err(TokenError::Unreadable { file, source }),
        }
    }

    /// A token that several agents share (the peers' `peer_token`), as configured.
    pub fn shared(token: &str) -> Self {
        AdminToken(token.into())
    }

    /// The `Authorization` header value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header carries this token. The comparison takes the same
    /// time wherever the first difference is, so timing tells a guesser nothing.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(presented) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let expected = self.0.as_bytes();
        presented.len() == expected.len()
            && presented
                .iter()
                .zip(expected)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }

    /// The file's contents.
    pub fn as_file_text(&self) -> String {
        format!("{}\n", self.0)
    }
}

fn is_token(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}
