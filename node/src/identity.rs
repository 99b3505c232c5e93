//! The node's libp2p identity, created on first start and kept in the data dir.

use std::io::Write;
use std::path::Path;

use tidings_ipld_schema::Keypair;

/// File name of the identity inside the data dir.
pub const IDENTITY_FILE: &str = "identity.key";

/// Errors loading or creating the identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("identity file {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The key file exists but does not hold a libp2p keypair.
    #[error("identity file {path} is not a libp2p protobuf keypair: {reason}")]
    Invalid {
        /// The key file.
        path: String,
        /// The decoder's complaint.
        reason: String,
    },
}

/// Loads the keypair from `dir/identity.key`, or creates an ed25519 one there.
///
/// The new key is written to a temporary file, synced and renamed into place, so a crash
/// during first start never leaves a half-written identity behind.
pub fn load_or_create(dir: &Path) -> Result<Keypair, IdentityError> {
    let path = dir.join(IDENTITY_FILE);
    let shown = path.display().to_string();
    let io = |source| IdentityError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Invalid {
            path: shown.clone(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair
                .to_protobuf_encoding()
                .map_err(|e| io(std::io::Error::other(e.to_string())))?;
            let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
            {
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&tmp).map_err(io)?;
                f.write_all(&bytes).map_err(io)?;
                f.sync_all().map_err(io)?;
            }
            std::fs::rename(&tmp, &path).map_err(io)?;
            if let Ok(d) = std::fs::File::open(dir) {
                // Persist the rename itself; failure here only weakens crash safety.
                let _ = d.sync_all();
            }
            tracing::info!(path = %shown, peer_id = %keypair.public().to_peer_id(), "created node identity");
            Ok(keypair)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
    }

    #[test]
    fn garbage_identity_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), b"not a key").unwrap();
        let err = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a libp2p protobuf keypair"), "{err}");
    }
}
