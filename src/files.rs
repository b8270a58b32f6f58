//! Small helpers for files that hold secrets.
//!
//! A tokens file and the log's signing key must not be readable by anyone but their owner: a
//! token hash file readable by others invites offline guessing, and a readable `log.key` lets
//! anyone sign checkpoints in the log's name. Both are refused at start-up with the command
//! that fixes them, rather than silently used.

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
