//! Reading the files an operator names: the config file, key files, TLS
//! files, plugin libraries.
//!
//! Each is checked the same way at start, in `switchyard check` and on
//! reload: it must be a regular file (opening a named pipe blocks until a
//! writer comes, and `/dev/zero` never ends), and it is read up to a bound,
//! so a wrong path can neither hang the router nor fill its memory.

use std::fs::{FileType, Metadata};
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// The most bytes a config file may hold.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// The most bytes a key, secret or certificate file may hold.
pub const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;

/// Why a named file could not be used. The message leaves the path out:
/// every caller names the path and what the file was for.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The operating system refused (missing file, no permission, …).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A folder, a named pipe, a device or a socket.
    #[error("it is {kind}, not a regular file: name a regular file")]
    NotRegular {
        /// What it is instead, in words.
        kind: &'static str,
    },
    /// Longer than the bound for its kind of file.
    #[error("it is larger than {} MiB, the most that is read", .max / (1024 * 1024))]
    TooLarge {
        /// The bound, in bytes.
        max: u64,
    },
    /// Bytes that are not UTF-8 where text is expected.
    #[error("it is not UTF-8 text")]
    NotUtf8,
}

/// The metadata of `path` (symbolic links followed), or why it is not a
/// regular file. Only looks: nothing is opened, so a named pipe cannot block.
pub fn regular(path: &Path) -> Result<Metadata, FileError> {
    let meta = std::fs::metadata(path)?;
    check_type(meta.file_type())?;
    Ok(meta)
}

fn check_type(file_type: FileType) -> Result<(), FileError> {
    let kind = if file_type.is_file() {
        return Ok(());
    } else if file_type.is_dir() {
        "a folder"
    } else if file_type.is_fifo() {
        "a named pipe (FIFO)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "a special file"
    };
    Err(FileError::NotRegular { kind })
}

/// The bytes of the regular file at `path`, at most `max` of them.
pub fn read_bytes(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    regular(path)?;
    let file = std::fs::File::open(path)?;
    // The path may have been swapped between the look and the open.
    check_type(file.metadata()?.file_type())?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge { max });
    }
    Ok(bytes)
}

/// The text of the regular file at `path`, at most `max` bytes of UTF-8.
pub fn read_text(path: &Path, max: u64) -> Result<String, FileError> {
    String::from_utf8(read_bytes(path, max)?).map_err(|_| FileError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "hello").unwrap();
        assert_eq!(read_text(&path, 5).unwrap(), "hello");
        assert!(matches!(
            read_text(&path, 4),
            Err(FileError::TooLarge { max: 4 })
        ));
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        for (path, kind) in [
            (dir.path(), "a folder"),
            (Path::new("/dev/zero"), "a character device"),
            (Path::new("/dev/null"), "a character device"),
        ] {
            let e = read_bytes(path, MAX_CONFIG_BYTES).unwrap_err();
            assert!(
                matches!(e, FileError::NotRegular { kind: k } if k == kind),
                "{}: {e}",
                path.display()
            );
        }
        let missing = read_bytes(&dir.path().join("missing"), 10).unwrap_err();
        assert!(matches!(missing, FileError::Io(_)), "{missing}");
    }
}
