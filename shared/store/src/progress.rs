//! Progress bars for long work (tokenizing, training steps, eval windows, GPTQ layers): shown on a
//! terminal, hidden when stderr is a pipe or a file (logs and CI stay clean).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

static HIDDEN: AtomicBool = AtomicBool::new(false);

/// Hides every bar of this process from now on (the worker ranks of a multi-process run: only
/// rank 0 draws, or N bars would fight over one terminal).
pub fn hide_all() {
    HIDDEN.store(true, Ordering::Relaxed);
}

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if HIDDEN.load(Ordering::Relaxed) || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}
