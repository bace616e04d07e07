//! The fork server, the parent's side ([`StartMethod::ForkServer`]): a
//! template worker per command, started once on the spawner thread and
//! asked, for each worker, to fork one (`child/template.rs`).
//!
//! An exec'd start pays for exec, the loader, the program's relocations
//! and the page faults of its code and data, each time: about a
//! millisecond and a half of a 2.5 MB worker's, most of it in the new
//! process, where many starting at once compete with the parent's event
//! loop for the CPUs. A fork of a template that is past all that and has
//! one thread costs a small part of it. The parent sends the template
//! the worker's socket, stdin and outputs with a request
//! (`handoff/template.rs`) and gets back the pid of a process that is
//! already its own child (`CLONE_PARENT`), with the pidfd the fork made
//! (`CLONE_PIDFD`), and follows it from then on as any worker: the
//! pidfd, the reaping, the exit status. The fork says so first itself,
//! with a pidfd of its own, so that it is ended and reaped whatever
//! becomes of its template ([`Copy`]).
//!
//! The exchange is a `SOCK_SEQPACKET` socketpair: it has no name, so no
//! other process can reach it; its template end is closed in every worker
//! forked, and close-on-exec in the parent. The template is started with
//! the same plan as a worker (`plan.rs`: signals reset, SIGTERM when the
//! parent dies, every other descriptor closed) and no resource limits of
//! its own; each worker's are set in the fork. Only the spawner thread
//! starts workers, so only it holds the templates.
//!
//! A template that refuses (it has threads or a runtime: see
//! `child/template.rs`), says nothing within [`READY_WAIT`] or says
//! something else (not a worker, or a worker of another version) is
//! killed, reaped and not tried again for that command; its workers are
//! exec'd. Once a request has reached a template, its descriptors may be
//! in a fork, so they are never used again: a template that then answers
//! nonsense, too late, or with a process that is not the parent's child
//! fails that start (a typed error, `Event::GaveUp`) and is not asked
//! again. One that dies is reaped at the next start, which makes a new
//! one; one that dies with a request has that start exec'd, with new
//! descriptors (`spawn.rs`). A template serves while the parent's user,
//! directory and what else its children inherit are as they were when
//! it started (`inherited.rs`); else it is let go and a new one made.
//! Every wait is bounded, and none ends early for a signal (the spawner
//! thread gets every worker's SIGCHLD).
//!
//! [`StartMethod::ForkServer`]: crate::parent::start_method::StartMethod::ForkServer

use std::cell::RefCell;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{socketpair, AddressFamily, Shutdown, SockFlag, SockType};

use super::inherited::Inherited;
use super::plan::{above_stdio, dev_null, Exec, Plan};
use super::verdict::{
    believed, exits_in_time, readable_within, short_of_descriptors, Believed, Copy, Failed,
    ANSWER_WAIT,
};
use crate::handoff::template::{self, Answer, Request, ENV_TEMPLATE, MAGIC, READY, REFUSED};
use crate::os;

/// How long a new template has to say it is ready: its exec, its loader
/// and its `main` up to the first line.
pub(crate) const READY_WAIT: Duration = Duration::from_secs(5);
/// The most commands with a template (or a refusal) known at once; a
/// start of another command is exec'd. Each template is a process and a
/// descriptor the parent holds for its life: an app that varies its
/// workers' command (an environment variable per worker) must not make
/// one per worker.
pub(crate) const MAX_TEMPLATES: usize = 8;

/// A template worker, serving.
struct Template {
    /// Its end of the exchange.
    control: OwnedFd,
    pid: i32,
    /// Readable once it has exited.
    pidfd: Option<OwnedFd>,
    /// What its workers inherit from it: the parent's, as it was when it
    /// started.
    inherited: Inherited,
}

impl Drop for Template {
    /// Kills it, with its process group (it leads one, as a worker does:
    /// a program that was no template may have started others), and
    /// reaps it: dropped when it failed, refused or died, or when the
    /// parent has changed since it started. Its exchange is shut first:
    /// one the parent may no longer signal (it runs as the user the parent
    /// was) ends on its own. Reaped within a bound: one that neither can
    /// be killed nor ends is left to end with the parent.
    fn drop(&mut self) {
        let _ = nix::sys::socket::shutdown(self.control.as_raw_fd(), Shutdown::Both);
        os::signal_group(self.pid, os::SIGKILL);
        match &self.pidfd {
            Some(pidfd) if !readable_within(pidfd.as_fd(), ANSWER_WAIT) => {
                tracing::warn!(pid = self.pid, "a template that is let go lives on");
            }
            _ => {
                os::reap(self.pid);
            }
        }
    }
}

/// What is known of a command's template.
enum Known {
    Serving(Template),
    /// It would not serve: its workers are exec'd.
    Refused,
}

thread_local! {
    /// The spawner thread's templates, by command (without the template's
    /// variable).
    static TEMPLATES: RefCell<Vec<(Exec, Known)>> = const { RefCell::new(Vec::new()) };
}

/// Starts a worker of `command` from its template (started first, if
/// there is none yet), sending it `fds` (the worker's socket, stdin, and
/// the outputs `request` says it has): the worker's pid, or the error of
/// the step of its start that failed (its process reaped). `None` where
/// no template serves: the caller execs the worker instead. `exec`
/// starts a template as it starts a worker (`spawn.rs`). With the pid, a
/// pidfd of the worker, the one its fork made.
pub(super) fn start(
    command: Exec,
    request: &Request,
    fds: &[RawFd],
    exec: fn(Plan) -> io::Result<u32>,
) -> Option<io::Result<(u32, OwnedFd)>> {
    // Too short of descriptors to tell what a worker would inherit: this
    // one is exec'd (a template of before a change must not fork it).
    let inherited = Inherited::now()?;
    TEMPLATES.with_borrow_mut(|templates| {
        // Templates that died since (killed, or a fault), and those whose
        // workers would not inherit what the parent's do now (it changed
        // its user or its directory since, say): reaped now, and made
        // again at their command's next start.
        let stale = |t: &Template| t.exited() || t.inherited != inherited;
        templates.retain(|(_, known)| !matches!(known, Known::Serving(t) if stale(t)));
        let at = match templates.iter().position(|(c, _)| *c == command) {
            Some(at) => at,
            None if templates.len() >= MAX_TEMPLATES => return None,
            None => {
                let known = match Template::start(&command, exec, inherited) {
                    Ok(template) => Known::Serving(template),
                    // This process short of descriptors or memory: exec'd,
                    // and tried again at the next start.
                    Err(why) if os::scarce(&why) => return None,
                    Err(why) => {
                        let program = command.path.to_string_lossy();
                        tracing::info!(%program, %why, "no fork server: its workers are exec'd");
                        Known::Refused
                    }
                };
                templates.push((command, known));
                templates.len() - 1
            }
        };
        let Known::Serving(template) = &templates[at].1 else { return None };
        let started =
            template.ask(request, fds).and_then(|(a, proof, copy)| believed(a, proof, copy));
        match started {
            Ok(Believed::Started(pid, pidfd)) => Some(Ok((pid as u32, pidfd))),
            Ok(Believed::Failed { pid, errno }) => {
                // Our child, which reported and exits (127): reaped, within
                // a bound (a template naming a live worker of ours must not
                // hold the spawner thread).
                if !exits_in_time(pid) {
                    let e = io::Error::other(format!("process {pid} named as failed lives on"));
                    tracing::warn!(error = %e, "the fork server failed");
                    templates[at].1 = Known::Refused;
                }
                Some(Err(io::Error::from_raw_os_error(errno)))
            }
            Ok(Believed::NotForked(errno)) => {
                let e = io::Error::from_raw_os_error(errno);
                tracing::warn!(error = %e, "the fork server could not fork: exec'ing this worker");
                None
            }
            Err(Failed::Before(e)) => {
                tracing::warn!(error = %e, "the fork server is gone: exec'ing this worker");
                // Killed and reaped; the next start makes a new one.
                templates.swap_remove(at);
                None
            }
            Err(Failed::After(e)) => {
                tracing::warn!(error = %e, "the fork server failed during a start");
                if e.kind() == io::ErrorKind::UnexpectedEof || os::scarce(&e) {
                    // It died, or this process ran short: the next start
                    // makes a new one.
                    templates.swap_remove(at);
                } else {
                    // It answered what it must not: not asked again.
                    templates[at].1 = Known::Refused;
                }
                Some(Err(e))
            }
        }
    })
}

/// A template's answer, the descriptors beside it, and the fork that said
/// it was made, if one did.
type Asked = (Answer, Vec<OwnedFd>, Option<Copy>);

/// Why a start failed when its template died with its request.
#[derive(Debug)]
struct Died;

impl std::fmt::Display for Died {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the template is gone")
    }
}

impl std::error::Error for Died {}

/// Whether a start failed because its template died with its request
/// (then another start, with new descriptors, makes a new one).
pub(super) fn died_with_the_request(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Died>())
}

impl Template {
    /// Starts `command` as a template and waits until it is ready.
    fn start(
        command: &Exec,
        start: fn(Plan) -> io::Result<u32>,
        inherited: Inherited,
    ) -> io::Result<Template> {
        let (control, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        // Neither end on a standard descriptor of a parent started with
        // them closed.
        let (control, theirs) = (above_stdio(control)?, above_stdio(theirs)?);
        let mut exec = command.clone();
        let told = format!("{ENV_TEMPLATE}={}", theirs.as_raw_fd());
        exec.envp.push(CString::new(told).expect("no NUL in a number"));
        let plan = Plan {
            exec,
            stdio: [Some(dev_null()?), None, None],
            socket: Some(theirs.as_raw_fd()),
            rlimits: Default::default(),
        };
        let pid = start(plan)? as i32;
        drop(theirs);
        let pidfd = os::pidfd_open(pid);
        let template = Template { control, pid, pidfd, inherited };
        if !readable_within(template.control.as_fd(), READY_WAIT) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "not ready in time"));
        }
        let mut packet = [0u8; template::MAX_PACKET];
        let Some((len, _)) = template::receive(template.control.as_fd(), &mut packet)? else {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "exited (not a worker?)"));
        };
        let said = packet[..len].strip_prefix(MAGIC);
        match said {
            Some(READY) => Ok(template),
            Some(refusal) if refusal.starts_with(REFUSED) => Err(io::Error::other(format!(
                "the template refused: {}",
                String::from_utf8_lossy(&refusal[REFUSED.len()..])
            ))),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the template spoke another version of the exchange",
            )),
        }
    }

    /// Whether it has exited.
    fn exited(&self) -> bool {
        self.pidfd.as_ref().is_some_and(|fd| os::readable_now(fd.as_fd()))
    }

    /// Asks for one worker: the template's answer, the descriptors that
    /// came with it, and what the fork said of itself, if one was made.
    /// Failed after a fork said it was made, that fork is ended.
    fn ask(&self, request: &Request, fds: &[RawFd]) -> Result<Asked, Failed> {
        let control = self.control.as_fd();
        let packet = request.encode();
        if packet.len() > template::MAX_PACKET {
            // An entry name of kilobytes: the template would not read it.
            return Ok((Answer::NotForked(libc::ENAMETOOLONG), Vec::new(), None));
        }
        // A packet is sent whole or not at all.
        template::send(control, &packet, fds).map_err(Failed::Before)?;
        let deadline = Instant::now() + ANSWER_WAIT;
        let mut copy = None;
        let failed = |copy: Option<Copy>, e| {
            copy.into_iter().for_each(Copy::end);
            Failed::After(e)
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !readable_within(control, left) {
                let e = io::Error::new(io::ErrorKind::TimedOut, "no answer in time");
                return Err(failed(copy, e));
            }
            let mut packet = [0u8; 64];
            let died = || io::Error::new(io::ErrorKind::UnexpectedEof, Died);
            let (len, mut proof, cut) = match template::receive_cut(control, &mut packet) {
                Ok(Some(received)) => received,
                // Gone: a fork it made said so first, if there is one. Gone
                // with the request unread, it resets the exchange.
                Ok(None) => return Err(failed(copy, died())),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE)) => {
                    return Err(failed(copy, died()))
                }
                Err(e) => return Err(failed(copy, e)),
            };
            let packet = &packet[..len];
            // Descriptors cut: this process out of them (a shortage), or a
            // template that sent more than a packet may carry.
            if cut || proof.len() > 1 {
                let e = match cut && short_of_descriptors(control) {
                    true => io::Error::from_raw_os_error(libc::ENOBUFS),
                    false => io::Error::new(io::ErrorKind::InvalidData, "too many descriptors"),
                };
                return Err(failed(copy, e));
            }
            match (template::copy_named(packet), &copy) {
                (Some(pid), None) => copy = Some(Copy { pid, pidfd: proof.pop() }),
                (Some(_), _) => {
                    let e = io::Error::new(io::ErrorKind::InvalidData, "a second fork");
                    return Err(failed(copy, e));
                }
                (None, _) => match Answer::decode(packet) {
                    Some(answer) => return Ok((answer, proof, copy)),
                    None => {
                        let e = io::Error::new(io::ErrorKind::InvalidData, "not an answer");
                        return Err(failed(copy, e));
                    }
                },
            }
        }
    }
}
