//! [`AuditLog`]: the live file, its rotation and its fsync policy. No
//! threads: the plugin calls it from the router's delivery thread. The
//! current time is passed in, so tests can drive the fsync interval.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::{Config, Fsync};

/// The audit log of one instance.
#[derive(Debug)]
pub struct AuditLog {
    config: Config,
    file: Option<File>,
    /// Bytes in the live file.
    size: u64,
    /// Lines written since the last fsync.
    dirty: bool,
    last_sync: Option<Instant>,
    stats: Stats,
}

/// What happened so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lines written.
    pub lines: u64,
    /// Rotations done.
    pub rotations: u64,
    /// fsync calls on the live file.
    pub syncs: u64,
    /// Failed writes, opens, rotations or fsyncs.
    pub errors: u64,
}

/// `path` with `.n` appended to its file name: `audit.log.1`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl AuditLog {
    /// A log for `config`; nothing is opened until [`AuditLog::open`] or the
    /// first write.
    pub fn new(config: Config) -> AuditLog {
        AuditLog {
            config,
            file: None,
            size: 0,
            dirty: false,
            last_sync: None,
            stats: Stats::default(),
        }
    }

    /// The live file's path, as configured.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// What happened so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the live file is open.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Opens (creating it and its parent folders if needed) the live file
    /// for appending. A last line left torn by an earlier failure or crash
    /// is ended with a newline, so that later lines stay whole.
    pub fn open(&mut self, now: Instant) -> io::Result<()> {
        self.file = None;
        let path = &self.config.path;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            fs::create_dir_all(parent)?;
        }
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut size = file.metadata()?.len();
        if size > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::End(-1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                size += 1;
            }
        }
        if !existed && self.config.fsync != Fsync::Never {
            sync_dir(parent);
        }
        self.file = Some(file);
        self.size = size;
        self.last_sync = Some(now);
        Ok(())
    }

    /// Appends `event` as one line, rotating first when the line would take
    /// the live file past `max_bytes` (a file always takes at least one
    /// line), then fsyncs as configured. On any failure the file is closed
    /// and the error returned; the next write reopens it.
    pub fn write(&mut self, event: &str, now: Instant) -> Result<(), String> {
        let result = self.try_write(event, now);
        if result.is_err() {
            self.stats.errors += 1;
            self.file = None;
        }
        result
    }

    fn try_write(&mut self, event: &str, now: Instant) -> Result<(), String> {
        // The router's envelopes are compact JSON, so this is a defence:
        // outside strings a raw line break is only white space.
        let line: Cow<'_, str> = if event.contains(['\n', '\r']) {
            Cow::Owned(event.replace(['\n', '\r'], " "))
        } else {
            Cow::Borrowed(event)
        };
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let len = buf.len() as u64;
        if self.file.is_none() {
            self.open(now).map_err(|e| self.error("cannot open", e))?;
        }
        if self.size > 0 && self.size.saturating_add(len) > self.config.max_bytes {
            self.rotate(now)
                .map_err(|e| self.error("cannot rotate", e))?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(format!(
                "audit-log: {} is not open",
                self.config.path.display()
            ));
        };
        if let Err(e) = file.write_all(&buf) {
            // Part of the line may be on disk: the reopen ends it.
            return Err(self.error("cannot write to", e));
        }
        self.size += len;
        self.dirty = true;
        self.stats.lines += 1;
        let due = match self.config.fsync {
            Fsync::Always => true,
            Fsync::Interval => self
                .last_sync
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.fsync_interval),
            Fsync::Never => false,
        };
        if due {
            self.sync(now).map_err(|e| self.error("cannot fsync", e))?;
        }
        Ok(())
    }

    fn error(&self, what: &str, e: io::Error) -> String {
        format!("audit-log: {what} {}: {e}", self.config.path.display())
    }

    /// Forces written lines to disk (nothing to do when none are pending).
    pub fn sync(&mut self, now: Instant) -> io::Result<()> {
        if let (true, Some(file)) = (self.dirty, self.file.as_ref()) {
            file.sync_data()?;
            self.stats.syncs += 1;
            self.dirty = false;
        }
        self.last_sync = Some(now);
        Ok(())
    }

    /// `path` → `path.1` → … → `path.{keep}`; the oldest beyond `keep` is
    /// deleted; a new, empty live file is opened.
    fn rotate(&mut self, now: Instant) -> io::Result<()> {
        if self.config.fsync != Fsync::Never {
            self.sync(now)?;
        }
        self.file = None;
        let path = self.config.path.clone();
        let keep = self.config.keep;
        if keep == 0 {
            remove_if_present(&path)?;
        } else {
            remove_if_present(&rotated_path(&path, keep))?;
            for n in (1..keep).rev() {
                rename_if_present(&rotated_path(&path, n), &rotated_path(&path, n + 1))?;
            }
            fs::rename(&path, rotated_path(&path, 1))?;
        }
        self.stats.rotations += 1;
        self.open(now)?;
        if self.config.fsync != Fsync::Never {
            sync_dir(path.parent());
        }
        Ok(())
    }

    /// Fsyncs pending lines (unless `fsync = "never"`) and closes the file.
    pub fn close(&mut self, now: Instant) -> io::Result<()> {
        let result = if self.config.fsync != Fsync::Never {
            self.sync(now)
        } else {
            Ok(())
        };
        self.file = None;
        result
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes new, removed and renamed names in the folder durable (best effort:
/// not every platform can fsync a folder).
fn sync_dir(parent: Option<&Path>) {
    let dir = parent.unwrap_or(Path::new("."));
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(path: &Path, max_bytes: u64, keep: u32, fsync: Fsync) -> Config {
        Config {
            path: path.to_owned(),
            max_bytes,
            keep,
            fsync,
            fsync_interval: Duration::from_millis(1000),
        }
    }

    fn read(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotated_names_append_a_number() {
        assert_eq!(
            rotated_path(Path::new("var/audit/audit.log"), 3),
            PathBuf::from("var/audit/audit.log.3")
        );
    }

    #[test]
    fn lines_are_appended_and_rotated_keeping_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/audit.log");
        // Each line is 11 bytes with its newline: two fit in 25 bytes.
        let mut log = AuditLog::new(config(&path, 25, 2, Fsync::Never));
        let now = Instant::now();
        for i in 0..10 {
            log.write(&format!("{{\"n\":{i:03}}}"), now).unwrap();
        }
        let folder = dir.path().join("nested/deeper");
        assert_eq!(names(&folder), ["audit.log", "audit.log.1", "audit.log.2"]);
        assert_eq!(read(&path), [r#"{"n":008}"#, r#"{"n":009}"#]);
        assert_eq!(
            read(&rotated_path(&path, 1)),
            [r#"{"n":006}"#, r#"{"n":007}"#]
        );
        assert_eq!(
            read(&rotated_path(&path, 2)),
            [r#"{"n":004}"#, r#"{"n":005}"#]
        );
        let stats = log.stats();
        assert_eq!((stats.lines, stats.rotations, stats.syncs), (10, 4, 0));
        for p in [path.clone(), rotated_path(&path, 1), rotated_path(&path, 2)] {
            assert!(fs::metadata(&p).unwrap().len() <= 25);
        }
    }

    #[test]
    fn keep_zero_keeps_only_the_live_file_and_a_long_line_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::new(config(&path, 10, 0, Fsync::Never));
        let now = Instant::now();
        log.write("short", now).unwrap();
        log.write("a line longer than max_bytes", now).unwrap();
        assert_eq!(read(&path), ["a line longer than max_bytes"]);
        log.write("next", now).unwrap();
        assert_eq!(read(&path), ["next"]);
        assert_eq!(names(dir.path()), ["audit.log"]);
    }

    #[test]
    fn an_existing_file_is_appended_to_and_a_torn_line_is_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        fs::write(&path, "{\"old\":1}\n{\"torn\":").unwrap();
        let mut log = AuditLog::new(config(&path, 1000, 5, Fsync::Always));
        log.open(Instant::now()).unwrap();
        log.write("{\"new\":1}", Instant::now()).unwrap();
        assert_eq!(read(&path), ["{\"old\":1}", "{\"torn\":", "{\"new\":1}"]);
        // Size is counted from the existing contents.
        let mut log = AuditLog::new(config(&path, 40, 5, Fsync::Never));
        log.write("{\"newer\":1}", Instant::now()).unwrap();
        assert_eq!(read(&path), ["{\"newer\":1}"]);
        assert_eq!(read(&rotated_path(&path, 1)).len(), 3);
    }

    #[test]
    fn line_breaks_inside_an_event_cannot_split_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::new(config(&path, 1000, 5, Fsync::Never));
        log.write("{\"a\":\n1}\r\n", Instant::now()).unwrap();
        assert_eq!(read(&path), ["{\"a\": 1}  "]);
    }

    #[test]
    fn fsync_always_syncs_each_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::new(config(&path, 1000, 5, Fsync::Always));
        let now = Instant::now();
        for _ in 0..3 {
            log.write("{}", now).unwrap();
        }
        assert_eq!(log.stats().syncs, 3);
        log.close(now).unwrap();
        assert_eq!(log.stats().syncs, 3, "nothing pending at close");
    }

    #[test]
    fn fsync_interval_syncs_once_the_interval_passed_and_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::new(config(&path, 1000, 5, Fsync::Interval));
        let t0 = Instant::now();
        log.open(t0).unwrap();
        let at = |ms| t0 + Duration::from_millis(ms);
        log.write("{}", at(0)).unwrap();
        log.write("{}", at(500)).unwrap();
        assert_eq!(log.stats().syncs, 0);
        log.write("{}", at(1000)).unwrap();
        assert_eq!(log.stats().syncs, 1);
        log.write("{}", at(1500)).unwrap();
        assert_eq!(log.stats().syncs, 1);
        log.write("{}", at(2100)).unwrap();
        assert_eq!(log.stats().syncs, 2);
        log.write("{}", at(2200)).unwrap();
        log.close(at(2300)).unwrap();
        assert_eq!(log.stats().syncs, 3, "pending lines are synced at close");
        assert_eq!(read(&path).len(), 6);
    }

    #[test]
    fn fsync_never_never_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::new(config(&path, 1000, 5, Fsync::Never));
        let t0 = Instant::now();
        log.write("{}", t0).unwrap();
        log.write("{}", t0 + Duration::from_secs(10)).unwrap();
        log.close(t0 + Duration::from_secs(11)).unwrap();
        assert_eq!(log.stats().syncs, 0);
    }

    #[test]
    fn a_failed_write_is_returned_and_the_next_one_reopens() {
        let dir = tempfile::tempdir().unwrap();
        // The parent "folder" is a file: nothing can be created under it.
        let blocker = dir.path().join("logs");
        fs::write(&blocker, "not a folder").unwrap();
        let path = blocker.join("audit.log");
        let mut log = AuditLog::new(config(&path, 1000, 5, Fsync::Never));
        let err = log.write("{\"n\":1}", Instant::now()).unwrap_err();
        assert!(err.contains("audit.log"), "{err}");
        assert!(!log.is_open());
        assert_eq!(log.stats().errors, 1);
        fs::remove_file(&blocker).unwrap();
        log.write("{\"n\":2}", Instant::now()).unwrap();
        assert!(log.is_open());
        assert_eq!(read(&path), ["{\"n\":2}"]);
    }

    #[test]
    fn a_failed_rotation_is_returned_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::new(config(&path, 12, 1, Fsync::Never));
        let now = Instant::now();
        log.write("{\"n\":1}", now).unwrap();
        // `audit.log.1` is a non-empty folder: the oldest cannot be removed.
        let in_the_way = rotated_path(&path, 1);
        fs::create_dir(&in_the_way).unwrap();
        fs::write(in_the_way.join("x"), "").unwrap();
        let err = log.write("{\"n\":2}", now).unwrap_err();
        assert!(err.contains("cannot rotate"), "{err}");
        fs::remove_dir_all(&in_the_way).unwrap();
        log.write("{\"n\":3}", now).unwrap();
        assert_eq!(read(&path), ["{\"n\":3}"]);
        assert_eq!(read(&rotated_path(&path, 1)), ["{\"n\":1}"]);
    }
}
