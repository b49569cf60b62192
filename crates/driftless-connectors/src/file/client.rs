//! The file connector's I/O: an atomic replace of the snapshot file.

use driftless_config::ChannelConfig;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where and how often a snapshot is written.
#[derive(Debug, Clone)]
pub struct FileSink {
    pub path: PathBuf,
    pub every: Duration,
}

impl FileSink {
    pub fn from_config(c: &ChannelConfig) -> Result<FileSink, String> {
        let path = c
            .path
            .as_deref()
            .ok_or("the file connector needs `path` (where to write the CSV snapshot)")?;
        let every = match c.schedule.as_deref() {
            None => Duration::from_secs(15 * 60),
            Some(s) => driftless_config::parse_duration(s)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!("schedule {s:?} is not an interval such as \"every 15m\"")
                })?,
        };
        Ok(FileSink {
            path: PathBuf::from(path),
            every,
        })
    }

    /// Replaces the file with `bytes`: readers see the old snapshot or the new one, never a mix.
    pub fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.path, bytes)
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(d) = dir {
        std::fs::create_dir_all(d)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".into());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(d) = dir
        && let Ok(d) = std::fs::File::open(d)
    {
        // The rename itself is durable only once the directory is synced.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out/shop.csv");
        super::write_atomic(&p, b"a").unwrap();
        super::write_atomic(&p, b"bc").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"bc");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
