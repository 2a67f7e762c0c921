//! Stopping the target's threads from the outside (step 2 of the loader's
//! switch protocol, `loader/csrc/switch.c`).
//!
//! Each thread is `PTRACE_SEIZE`d and `PTRACE_INTERRUPT`ed: a ptrace stop
//! runs no handler in the target, so a system call it interrupts is
//! restarted by the kernel when the thread goes on (no `EINTR` reaches the
//! program), and a thread that blocks every signal stops like any other.
//! The task list is re-read until no new thread shows up (a thread created by
//! a not-yet-stopped one appears in a later scan). Every wait is bounded: a
//! thread that does not stop (uninterruptible sleep) releases all the others
//! at once. If hpctl dies, the kernel detaches and the threads run on.

use format::protocol::ThreadRegs;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How long one thread may take to reach its stop.
const STOP_WAIT: Duration = Duration::from_millis(500);

/// Threads of one process that hpctl holds stopped.
pub struct Stopper {
    pid: i32,
    /// (tid, signal to hand back when detaching).
    held: Vec<(i32, i32)>,
    /// When the first thread of the current stop was interrupted.
    since: Option<Instant>,
    /// Per stop: how long the threads were held, first interrupt to last
    /// detach (the longest any thread was parked by that stop).
    pub parked: Vec<Duration>,
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn ptrace(req: libc::c_uint, tid: i32, data: usize) -> Result<(), std::io::Error> {
    // SAFETY: plain ptrace requests on a tid; no pointers are passed.
    let rc = unsafe { libc::ptrace(req, tid, 0usize, data) };
    if rc < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn tasks(pid: i32) -> Result<Vec<i32>, String> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("cannot list the threads of process {pid}: {e}"))?;
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// A one-shot timer whose SIGALRM goes to the thread that made it, to
/// interrupt that thread's blocking `waitpid`. Per thread because `--exe`
/// stops several processes at once, one per thread: a process-wide
/// `setitimer` would be re-armed by the others and wake the wrong waiter.
struct WaitTimer(libc::timer_t);

impl WaitTimer {
    fn new() -> Result<WaitTimer, String> {
        static HANDLER: std::sync::Once = std::sync::Once::new();
        // SAFETY: installs a handler that does nothing, without SA_RESTART,
        // so a waitpid in progress returns EINTR; timer_create writes the id
        // into a local and the sigevent is plain data.
        unsafe {
            HANDLER.call_once(|| {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_alarm as *const () as usize;
                libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
            });
            let mut ev: libc::sigevent = std::mem::zeroed();
            ev.sigev_notify = libc::SIGEV_THREAD_ID;
            ev.sigev_signo = libc::SIGALRM;
            ev.sigev_notify_thread_id = libc::gettid();
            let mut id: libc::timer_t = std::mem::zeroed();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id) < 0 {
                return Err(format!("cannot create a timer: {}", errno()));
            }
            Ok(WaitTimer(id))
        }
    }

    fn arm(&self, after: Duration) {
        let t = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: the timer is ours and alive; the value is plain data.
        unsafe { libc::timer_settime(self.0, 0, &t, std::ptr::null_mut()) };
    }

    fn disarm(&self) {
        self.arm(Duration::ZERO);
    }
}

impl Drop for WaitTimer {
    fn drop(&mut self) {
        // SAFETY: deletes the timer this value owns, once.
        unsafe { libc::timer_delete(self.0) };
    }
}

/// What a wait for one interrupted thread found.
enum Waited {
    /// Stopped; the signal to re-inject at detach (0: none).
    Stopped(i32),
    Gone,
    TimedOut,
}

fn wait_stop(tid: i32) -> Waited {
    let mut status = 0;
    // SAFETY: waitpid writes the status into a local.
    let rc = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
    if rc < 0 {
        return match errno().raw_os_error() {
            Some(libc::EINTR) => Waited::TimedOut,
            _ => Waited::Gone,
        };
    }
    if !libc::WIFSTOPPED(status) {
        return Waited::Gone;
    }
    let sig = libc::WSTOPSIG(status);
    let event = status >> 16;
    // PTRACE_INTERRUPT's own stop, or a signal stop that must be passed on.
    if event == libc::PTRACE_EVENT_STOP || sig == libc::SIGTRAP {
        Waited::Stopped(0)
    } else {
        Waited::Stopped(sig)
    }
}

/// Is the thread gone, or a zombie on its way out?
fn exiting(pid: i32, tid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_none_or(|state| state == 'Z' || state == 'X'),
    }
}

fn thread_label(pid: i32, tid: i32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
    format!("thread {tid} ({})", comm.trim())
}

fn regs_of(tid: i32) -> Result<ThreadRegs, String> {
    // SAFETY: PTRACE_GETREGS fills a user_regs_struct for a stopped tracee.
    let r = unsafe {
        let mut r: libc::user_regs_struct = std::mem::zeroed();
        if libc::ptrace(libc::PTRACE_GETREGS, tid, 0usize, &mut r as *mut _ as usize) < 0 {
            return Err(format!(
                "cannot read the registers of thread {tid}: {}",
                errno()
            ));
        }
        r
    };
    // DWARF order: rax rdx rcx rbx rsi rdi rbp rsp r8..r15 rip.
    let regs = [
        r.rax, r.rdx, r.rcx, r.rbx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, r.rip,
    ];
    Ok(ThreadRegs {
        tid: tid as u32,
        regs,
    })
}

impl Stopper {
    pub fn new(pid: u32) -> Stopper {
        Stopper {
            pid: pid as i32,
            held: Vec::new(),
            since: None,
            parked: Vec::new(),
        }
    }

    /// Stops every thread of the process but `skip`; their registers.
    pub fn stop(&mut self, skip: u32) -> Result<Vec<ThreadRegs>, String> {
        let result = self.stop_all(skip as i32);
        if result.is_err() {
            self.resume();
        }
        result
    }

    fn stop_all(&mut self, skip: i32) -> Result<Vec<ThreadRegs>, String> {
        let mut known: HashSet<i32> = HashSet::from([skip]);
        let deadline = Instant::now() + STOP_WAIT * 4;
        loop {
            let new: Vec<i32> = tasks(self.pid)?
                .into_iter()
                .filter(|t| !known.contains(t))
                .collect();
            if new.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("process {} keeps starting threads", self.pid));
            }
            known.extend(&new);
            let seized = self.seize(&new)?;
            self.interrupt_and_wait(&seized)?;
        }
        self.held.iter().map(|&(tid, _)| regs_of(tid)).collect()
    }

    /// Seizes each thread (a thread that has exited meanwhile is skipped).
    fn seize(&mut self, tids: &[i32]) -> Result<Vec<i32>, String> {
        let mut seized = Vec::with_capacity(tids.len());
        for &tid in tids {
            match ptrace(libc::PTRACE_SEIZE, tid, 0) {
                Ok(()) => seized.push(tid),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                // The kernel refuses to attach to a thread that is exiting:
                // it runs no more user code, so it needs no stop.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && exiting(self.pid, tid) => {}
                Err(e) => {
                    self.held.extend(seized.iter().map(|&t| (t, 0)));
                    return Err(format!(
                        "cannot ptrace {}: {e} (is it traced by a debugger?)",
                        thread_label(self.pid, tid)
                    ));
                }
            }
        }
        Ok(seized)
    }

    fn interrupt_and_wait(&mut self, seized: &[i32]) -> Result<(), String> {
        let timer = match WaitTimer::new() {
            Ok(t) => t,
            Err(e) => {
                // Seized but not interrupted: detached with the others.
                self.held.extend(seized.iter().map(|&t| (t, 0)));
                return Err(e);
            }
        };
        self.since.get_or_insert_with(Instant::now);
        for &tid in seized {
            let _ = ptrace(libc::PTRACE_INTERRUPT, tid, 0);
        }
        let mut result = Ok(());
        for &tid in seized {
            timer.arm(STOP_WAIT);
            let waited = wait_stop(tid);
            timer.disarm();
            match waited {
                Waited::Stopped(sig) => self.held.push((tid, sig)),
                Waited::Gone => {}
                Waited::TimedOut => {
                    // Still seized: it is detached with the others.
                    self.held.push((tid, 0));
                    result = Err(format!(
                        "{} did not stop within {} ms (uninterruptible sleep?); every thread was let go",
                        thread_label(self.pid, tid),
                        STOP_WAIT.as_millis()
                    ));
                }
            }
        }
        result
    }

    /// Lets every held thread go (a thread that did not reach its stop is
    /// detached as soon as it does: the kernel does it when we exit).
    pub fn resume(&mut self) {
        let _rt = Realtime::enter(!self.held.is_empty());
        for (tid, sig) in self.held.drain(..) {
            let _ = ptrace(libc::PTRACE_DETACH, tid, sig as usize);
        }
        if let Some(t0) = self.since.take() {
            self.parked.push(t0.elapsed());
        }
    }
}

/// hpctl at real-time priority for the length of a resume, where it may.
///
/// Measured (`cargo xtask bench stop`): each detach wakes a thread that has
/// slept, and the scheduler often lets it preempt hpctl on the same CPU;
/// hpctl then got the CPU back only at the next tick (4 ms at HZ=250), with
/// the threads it had not detached yet still parked. SCHED_FIFO for the
/// few microseconds of the loop keeps the resume one burst. Without the
/// privilege (CAP_SYS_NICE) the loop runs as before.
struct Realtime {
    raised: bool,
}

impl Realtime {
    fn enter(want: bool) -> Realtime {
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: changes only this thread's scheduling policy.
        let raised = want && unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
        Realtime { raised }
    }
}

impl Drop for Realtime {
    fn drop(&mut self) {
        if self.raised {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: back to the default policy.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
        }
    }
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.resume();
    }
}
