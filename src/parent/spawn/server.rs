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
//! already its own child (`CLONE_PARENT`), which it follows from then on
//! as any worker: a pidfd, the reaping, the exit status.
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
//! exec'd. One that stops answering, or dies, is killed and reaped, the
//! worker asked for is exec'd, and the next start makes a new one.
//!
//! [`StartMethod::ForkServer`]: crate::parent::start_method::StartMethod::ForkServer

use std::cell::RefCell;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::poll::PollFlags;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::plan::{above_stdio, dev_null, Exec, Plan};
use crate::handoff::template::{self, Answer, Request, ENV_TEMPLATE, MAGIC, READY, REFUSED};
use crate::{handoff, os};

/// How long a new template has to say it is ready: its exec, its loader
/// and its `main` up to the first line.
pub(crate) const READY_WAIT: Duration = Duration::from_secs(5);
/// The most commands with a template (or a refusal) known at once; a
/// start of another command is exec'd. Each template is a process and a
/// descriptor the parent holds for its life: an app that varies its
/// workers' command (an environment variable per worker) must not make
/// one per worker.
pub(crate) const MAX_TEMPLATES: usize = 8;

/// How long a template has to answer a request: one fork, and the new
/// worker's steps.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A template worker, serving.
struct Template {
    /// Its end of the exchange.
    control: OwnedFd,
    pid: i32,
}

impl Drop for Template {
    /// Kills and reaps it: dropped only when it failed or refused.
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), os::SIGKILL);
        os::reap(self.pid);
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
/// starts a template as it starts a worker (`spawn.rs`).
pub(super) fn start(
    command: Exec,
    request: &Request,
    fds: &[RawFd],
    exec: fn(Plan) -> io::Result<u32>,
) -> Option<io::Result<u32>> {
    TEMPLATES.with_borrow_mut(|templates| {
        let at = match templates.iter().position(|(c, _)| *c == command) {
            Some(at) => at,
            None if templates.len() >= MAX_TEMPLATES => return None,
            None => {
                let known = match Template::start(&command, exec) {
                    Ok(template) => Known::Serving(template),
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
        let answer = template.ask(request, fds).and_then(|answer| match answer {
            // Believed only of a child of ours: the parent signals and
            // reaps a worker's process, never another's.
            Answer::Started(pid) if handoff::parent_of(pid) != Some(std::process::id() as i32) => {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("pid {pid} is not our child"),
                ))
            }
            answer => Ok(answer),
        });
        match answer {
            Ok(Answer::Started(pid)) => Some(Ok(pid as u32)),
            Ok(Answer::Failed { pid, errno }) => {
                // Our child, exited (127) after its report.
                os::reap(pid);
                Some(Err(io::Error::from_raw_os_error(errno)))
            }
            Ok(Answer::NotForked(errno)) => {
                let e = io::Error::from_raw_os_error(errno);
                tracing::warn!(error = %e, "the fork server could not fork: exec'ing this worker");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "the fork server failed: exec'ing this worker");
                // Killed and reaped; the next start makes a new one.
                templates.swap_remove(at);
                None
            }
        }
    })
}

impl Template {
    /// Starts `command` as a template and waits until it is ready.
    fn start(command: &Exec, start: fn(Plan) -> io::Result<u32>) -> io::Result<Template> {
        let (control, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        let theirs = above_stdio(theirs)?;
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
        let template = Template { control, pid };
        if !os::ready(&[template.control.as_fd()], PollFlags::POLLIN, READY_WAIT) {
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

    /// Asks for one worker: the template's answer.
    fn ask(&self, request: &Request, fds: &[RawFd]) -> io::Result<Answer> {
        let control = self.control.as_fd();
        let packet = request.encode();
        if packet.len() > template::MAX_PACKET {
            // An entry name of kilobytes: the template would not read it.
            return Ok(Answer::NotForked(libc::ENAMETOOLONG));
        }
        template::send(control, &packet, fds)?;
        if !os::ready(&[control], PollFlags::POLLIN, ANSWER_WAIT) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
        }
        let mut packet = [0u8; 64];
        let Some((len, _)) = template::receive(control, &mut packet)? else {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the template is gone"));
        };
        Answer::decode(&packet[..len])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an answer"))
    }
}
