//! `server.pid_file`: the main PID, for init scripts and the upgrade
//! procedure. Pingora writes it only in daemon mode, which tollgate does not
//! use, so tollgate writes it itself.

use std::path::Path;

pub fn write(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, format!("{}\n", std::process::id()))
}

/// Removes the file at exit, unless it names another process: after a
/// binary upgrade it already holds the new process's PID.
pub fn remove_if_ours(path: &Path) {
    let ours =
        std::fs::read_to_string(path).is_ok_and(|pid| pid.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_then_removed_only_when_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/tollgate.pid");
        write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        std::fs::write(&path, "1\n").unwrap();
        remove_if_ours(&path);
        assert!(path.exists(), "another process's pid file is left alone");
        write(&path).unwrap();
        remove_if_ours(&path);
        assert!(!path.exists());
    }
}
