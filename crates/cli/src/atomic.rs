//! Output files that appear only when complete: write a temporary file in the destination's
//! directory, fsync it, rename it over the destination, fsync the directory. A failure removes
//! the temporary file; a crash leaves either the old file or the new one at the destination.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use hanzo_kms_core::{Error, ErrorKind, Result};

pub struct AtomicOutput {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    committed: bool,
}

impl AtomicOutput {
    /// `private`: create the file owner-only (for plaintext).
    pub fn create(dest: &Path, private: bool) -> Result<Self> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .ok_or_else(|| Error::invalid(format!("{} is not a file path", dest.display())))?;
        let mut suffix = [0u8; 6];
        hanzo_kms_software::aead::random(&mut suffix)?;
        let tmp = dir.join(format!(
            ".{}.hkms-tmp-{}",
            name.to_string_lossy(),
            hex::encode(suffix)
        ));
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if private { 0o600 } else { 0o644 });
        }
        let file = opts.open(&tmp).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("creating a temporary file in {}", dir.display()),
            )
            .with_source(e)
        })?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            file,
            committed: false,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Make the output durable and visible.
    pub fn commit(mut self) -> Result<()> {
        let io = |what: String, e: std::io::Error| Error::new(ErrorKind::Io, what).with_source(e);
        self.file
            .sync_all()
            .map_err(|e| io(format!("syncing {}", self.tmp.display()), e))?;
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| io(format!("renaming into {}", self.dest.display()), e))?;
        self.committed = true;
        if let Some(dir) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(format!("syncing directory {}", dir.display()), e))?;
        }
        Ok(())
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
