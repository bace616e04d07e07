//! Panics of the code that starts an answer (a `serve_stream` closure, run
//! where the request is read), caught there: the request fails with the
//! panic's report and the connection goes on. Uncaught, the panic ended
//! the task that reads the connection, and with it the parent's `Worker`
//! for good.
//!
//! The reply is moved into the code that panics and dropped as the panic
//! unwinds, before the panic's payload is known: a reply dropped unsent
//! while [`caught`] runs leaves its failure here, to be sent with the
//! report once the panic is caught.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A failure to send once the panic's payload is known.
pub(crate) type Fail = Box<dyn FnOnce(&(dyn Any + Send))>;

thread_local! {
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    static FAILS: RefCell<Vec<Fail>> = const { RefCell::new(Vec::new()) };
}

/// Whether what is dropped now is dropped by a panic that [`caught`] will
/// catch.
pub(crate) fn catching() -> bool {
    std::thread::panicking() && CATCHING.with(Cell::get)
}

/// Leaves `fail` to be called with the panic's payload once caught.
pub(crate) fn on_catch(fail: Fail) {
    FAILS.with(|fails| fails.borrow_mut().push(fail));
}

/// Runs `start`; a panic in it is caught, and the replies it dropped fail
/// with its report.
pub(crate) fn caught(start: impl FnOnce()) {
    let outer = CATCHING.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(start));
    CATCHING.with(|c| c.set(outer));
    if let Err(payload) = result {
        let fails = FAILS.with(|fails| std::mem::take(&mut *fails.borrow_mut()));
        for fail in fails {
            fail(&*payload);
        }
    }
}
