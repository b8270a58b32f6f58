//! sled's panics, turned into errors at the log's boundaries (SPEC §3, §6).
//!
//! sled 0.34 panics on some damaged files instead of returning an error (for one, a flipped
//! bit in its last segment makes `Config::open` panic with "tried to serialize
//! Uninitialized"). A panic is no answer for an operator: it names no file, prints a stack
//! trace, and from a scan it hides how far the log could be read. So every place that hands
//! control to sled on data from disk — opening, the start-up check, scans, the audit — runs
//! under [`catch`], which turns a panic into an error naming the file (and, where the caller
//! knows it, the first index that could not be read).
//!
//! The process-wide panic hook is wrapped once so that a panic caught here prints nothing;
//! every other panic still reaches the previous hook unchanged.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many [`catch`] calls this thread is inside.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
    /// The message and place of the last panic caught on this thread.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) > 0 {
                // The last three path components (`sled-0.34.7/src/x.rs`) name the place; the
                // rest is this machine's cargo registry.
                let place = info
                    .location()
                    .map(|l| {
                        let parts: Vec<&str> = l.file().rsplit('/').take(3).collect();
                        let short: Vec<&str> = parts.into_iter().rev().collect();
                        format!(" (at {}:{})", short.join("/"), l.line())
                    })
                    .unwrap_or_default();
                let msg = format!("{}{place}", payload_text(info.payload()));
                CAUGHT.with(|c| *c.borrow_mut() = Some(msg));
            } else {
                previous(info);
            }
        }));
    });
}

pub(crate) fn payload_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs `f`; a panic inside it becomes `Err(message)` and prints nothing.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    CATCHING.with(|c| c.set(c.get() + 1));
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    out.map_err(|payload| {
        CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| payload_text(payload.as_ref()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_is_an_error_with_its_message_and_place() {
        let r: Result<(), String> = catch(|| panic!("tried to serialize Uninitialized"));
        let msg = r.expect_err("caught");
        assert!(
            msg.starts_with("tried to serialize Uninitialized (at "),
            "{msg}"
        );
        assert!(msg.contains("guard.rs"), "{msg}");
        assert_eq!(catch(|| 7), Ok(7));
    }
}
