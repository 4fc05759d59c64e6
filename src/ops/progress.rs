//! A progress bar on stderr for the long operator commands: `[#########.........]  48%  600/1250`.

use std::io::Write;

pub struct Progress {
    label: &'static str,
    total: u64,
}

impl Progress {
    pub fn new(label: &'static str, total: u64) -> Self {
        Self { label, total }
    }

    pub fn show(&self, done: u64) {
        const WIDTH: u64 = 30;
        let total = self.total.max(1);
        let filled = (done.min(total) * WIDTH / total) as usize;
        let percent = done.min(total) * 100 / total;
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(WIDTH as usize - filled));
        eprint!("\r{} [{bar}] {percent:>3}%  {done}/{}", self.label, self.total);
        let _ = std::io::stderr().flush();
    }

    pub fn finish(&self) {
        eprintln!();
    }
}
