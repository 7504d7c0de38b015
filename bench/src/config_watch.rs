//! Reloading the scheduler's configuration while the tool runs: the file is re-read when
//! its modification time changes or the process gets SIGHUP, and proposed to the running
//! scheduler through its [`triage::ConfigHandle`] (applied at the next step boundary).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};
use triage::{ConfigHandle, SchedulerConfig};

/// A running watcher; stops when dropped.
pub struct ConfigWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How a reload attempt went, for the tool's log.
fn report(path: &Path, r: Result<(), triage::ConfigError>) {
    match r {
        Ok(()) => eprintln!(
            "config: {} re-read; proposed to the scheduler (applied at its next step)",
            path.display()
        ),
        Err(e) => eprintln!(
            "config: {}: {e}; the configuration in force is unchanged",
            path.display()
        ),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ConfigWatcher {
    /// Watches `path` (polling its modification time every `poll`) and SIGHUP.
    pub fn spawn(path: PathBuf, handle: ConfigHandle, poll: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("triage-config-watch".into())
            .spawn(move || {
                let mut seen = modified(&path);
                while !stop2.load(Ordering::Acquire) {
                    std::thread::park_timeout(poll);
                    let now = modified(&path);
                    let changed = now.is_some() && now != seen;
                    if changed || hup.swap(false, Ordering::AcqRel) {
                        seen = now;
                        let r = SchedulerConfig::from_path(&path).and_then(|c| handle.propose(c));
                        report(&path, r);
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
