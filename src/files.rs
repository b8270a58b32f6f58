//! Small helpers for files the service keeps beside sled: secrets (signing keys, tokens) and
//! small state files.
//!
//! A tokens file and the log's signing key must not be readable by anyone but their owner: a
//! token hash file readable by others invites offline guessing, and a readable `log.key` lets
//! anyone sign checkpoints in the log's name. Both are refused at start-up with the command
//! that fixes them, rather than silently used.
//!
//! Small state files (keys, the checkpoint file when it is created, a witness's state) are
//! replaced atomically with [`replace`], so a crash leaves either the old contents or the new,
//! never a mix.

use std::io::Write;
use std::path::Path;

/// Errs when `path` can be read or written by its group or by others, saying how to fix it.
#[cfg(unix)]
pub fn ensure_private(path: &Path, what: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{what} {} has mode {mode:04o}: it must be readable only by its owner; \
             fix it with `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// On platforms without Unix modes there is nothing to check.
#[cfg(not(unix))]
pub fn ensure_private(_path: &Path, _what: &str) -> Result<(), String> {
    Ok(())
}

/// Replaces `path` with `contents` atomically and durably: a new temporary file beside it (mode
/// 0600, so it suits secrets too), written and fsynced, renamed over `path`, then the directory
/// fsynced so the rename itself survives a crash. When it returns `Ok`, `path` holds `contents`
/// on disk; after a crash at any point it holds either the old contents or the new.
///
/// On error the error names the file that failed.
pub fn replace(path: &Path, contents: &[u8]) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let mut tmp_name = name;
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    // A temporary file left by a crash may have any mode and contents: start from a new one.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err((tmp, e)),
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err((tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| (path.to_path_buf(), e))?;
    sync_dir(&dir).map_err(|e| (dir, e))
}

/// fsyncs the directory `dir`, so that the files created in it (or renamed into it) survive a
/// crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Why [`load_or_create_key`] failed.
#[derive(Debug)]
pub enum KeyFileError {
    /// Readable by others (the message says how to fix it).
    Insecure(String),
    /// Not base64 of a 32-byte seed.
    Corrupt(std::path::PathBuf),
    Io(std::path::PathBuf, std::io::Error),
}

/// Loads the Ed25519 signing key at `path` (base64 of its 32-byte seed, readable only by its
/// owner), or creates one there with [`replace`] on first use. `what` names the key in the
/// error about its mode. The log's `log.key` and a witness's `witness.key` are both this.
pub fn load_or_create_key(
    path: &Path,
    what: &str,
) -> Result<ed25519_dalek::SigningKey, KeyFileError> {
    use base64::Engine;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            // A key others can read lets them sign in its owner's name.
            ensure_private(path, what).map_err(KeyFileError::Insecure)?;
            let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()
                .and_then(|raw| raw.try_into().ok())
                .ok_or_else(|| KeyFileError::Corrupt(path.to_path_buf()))?;
            Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
            let text = base64::engine::general_purpose::STANDARD.encode(key.to_bytes()) + "\n";
            replace(path, text.as_bytes()).map_err(|(p, e)| KeyFileError::Io(p, e))?;
            Ok(key)
        }
        Err(e) => Err(KeyFileError::Io(path.to_path_buf(), e)),
    }
}
