//! A pool of PKCS#11 sessions on one token, with one login.
//!
//! PKCS#11 login state belongs to the application, not to a session: once one session has logged
//! in, every session the application opens on that token is logged in too, until the *last*
//! session closes. The pool therefore keeps an *anchor* session that holds the login and is
//! never used for work, and hands out up to `max_sessions` working sessions. A caller that finds
//! them all busy waits for one (bounded by [`WAIT_LIMIT`]) rather than failing.
//!
//! When the module reports that sessions are gone (`CKR_SESSION_HANDLE_INVALID`,
//! `CKR_SESSION_CLOSED`, `CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT`, `CKR_USER_NOT_LOGGED_IN`)
//! the pool starts a new *generation*: idle sessions are dropped, sessions in use are closed as
//! they come back, and the anchor is reopened and logs in again. The failed call is retried once
//! on a session of the new generation.

use std::sync::{Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// How long a request waits for a free session before giving up.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Why a pooled call failed.
#[derive(Debug)]
pub enum PoolError {
    /// The module refused the call (after one recovery attempt if the error called for it).
    Call(CkError),
    /// Logging in failed; the token, PIN or user type is wrong. Carries the module's answer.
    Login(CkError),
    /// Every session stayed busy for [`WAIT_LIMIT`].
    Exhausted,
}

/// Counters for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Sessions open now (excluding the anchor).
    pub open: usize,
    /// The most sessions ever in use at once.
    pub high_water: usize,
    /// How often a caller had to wait for a session.
    pub waits: u64,
    /// How often the pool recovered (reopened sessions and logged in again).
    pub recoveries: u64,
}

struct State {
    idle: Vec<Session>,
    open: usize,
    in_use: usize,
    generation: u64,
    stats: PoolStats,
}

/// Finds the token's slot again (slot ids can change when a module is re-initialised or a token
/// comes back in another slot).
pub type Locate = Box<dyn Fn(&Pkcs11) -> Option<Slot> + Send + Sync>;

pub struct Pool {
    ctx: Pkcs11,
    slot: Mutex<Slot>,
    locate: Locate,
    pin: AuthPin,
    user_type: UserType,
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
    gate: RwLock<()>,
    anchor: Mutex<Option<Session>>,
}

/// Errors after which the token's sessions (and login) must be rebuilt.
pub fn needs_recovery(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// The slot vanished or was renumbered (after a module re-initialisation).
fn slot_gone(e: &CkError) -> bool {
    matches!(e, CkError::Pkcs11(RvError::SlotIdInvalid, _))
}

impl Pool {
    /// Open the anchor session and log in. Fails with [`PoolError::Login`] on a bad PIN.
    pub fn new(
        ctx: Pkcs11,
        slot: Slot,
        locate: Locate,
        pin: AuthPin,
        user_type: UserType,
        max: usize,
    ) -> Result<Self, PoolError> {
        let pool = Self {
            ctx,
            slot: Mutex::new(slot),
            locate,
            pin,
            user_type,
            max: max.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                in_use: 0,
                generation: 0,
                stats: PoolStats::default(),
            }),
            freed: Condvar::new(),
            gate: RwLock::new(()),
            anchor: Mutex::new(None),
        };
        pool.login()?;
        Ok(pool)
    }

    /// Bumped every time the pool recovers. Object handles from an older generation must not be
    /// trusted: after the module is re-initialised a number may name another object.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The token's slot now.
    pub fn slot(&self) -> Slot {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn max_sessions(&self) -> usize {
        self.max
    }

    pub fn stats(&self) -> PoolStats {
        let st = self.lock();
        PoolStats {
            open: st.open,
            ..st.stats
        }
    }

    /// Run `f` on a pooled session. If the module says the session or login is gone, rebuild
    /// the pool and run `f` once more.
    pub fn run<T>(
        &self,
        mut f: impl FnMut(&Session) -> Result<T, CkError>,
    ) -> Result<T, PoolError> {
        let mut recovered = false;
        loop {
            // Work runs under the gate's read side; recovery takes the write side, so no session
            // of a new generation is used before its login has completed.
            let gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
            let (session, generation) = match self.checkout() {
                Ok(s) => s,
                // Opening a session can itself report that the module or slot went away.
                Err(PoolError::Call(e)) if !recovered && (needs_recovery(&e) || slot_gone(&e)) => {
                    let generation = self.generation();
                    drop(gate);
                    tracing::warn!(error = %e, "PKCS#11 session could not be opened; recovering");
                    self.recover(generation)?;
                    recovered = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let result = f(&session);
            match result {
                Err(e) if needs_recovery(&e) => {
                    self.checkin(session, generation, false);
                    drop(gate);
                    if recovered {
                        return Err(PoolError::Call(e));
                    }
                    tracing::warn!(error = %e, "PKCS#11 sessions lost; reopening and logging in again");
                    self.recover(generation)?;
                    recovered = true;
                }
                other => {
                    self.checkin(session, generation, true);
                    return other.map_err(PoolError::Call);
                }
            }
        }
    }

    /// Check the anchor session; used by health checks.
    pub fn anchor_alive(&self) -> Result<(), CkError> {
        let anchor = self.anchor.lock().unwrap_or_else(|e| e.into_inner());
        match anchor.as_ref() {
            Some(s) => s.get_session_info().map(|_| ()),
            None => Err(CkError::Pkcs11(
                RvError::SessionHandleInvalid,
                cryptoki::context::Function::GetSessionInfo,
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters that are still consistent enough to
        // go on with; sessions are returned by value, never half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn login(&self) -> Result<(), PoolError> {
        let session = self
            .ctx
            .open_rw_session(self.slot())
            .map_err(PoolError::Login)?;
        match session.login(self.user_type, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(PoolError::Login(e)),
        }
        *self.anchor.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
        Ok(())
    }

    fn recover(&self, failed_generation: u64) -> Result<(), PoolError> {
        // Exclusive: waits for work in flight to finish and holds new work back until the login
        // of the new generation is done.
        let _exclusive = self.gate.write().unwrap_or_else(|e| e.into_inner());
        {
            let mut st = self.lock();
            if st.generation != failed_generation {
                // Someone else already rebuilt the pool after this failure.
                return Ok(());
            }
            st.generation += 1;
            st.stats.recoveries += 1;
            let dropped = st.idle.len();
            st.idle.clear();
            st.open -= dropped;
        }
        // Drop the old anchor before logging in again: its handle may be dead.
        drop(self.anchor.lock().unwrap_or_else(|e| e.into_inner()).take());
        // The module may have been finalised under us (another component of the process called
        // C_Finalize): initialise it again. Then find the token's slot afresh.
        match self
            .ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(PoolError::Login(e)),
        }
        let slot = (self.locate)(&self.ctx).ok_or(PoolError::Login(CkError::Pkcs11(
            RvError::TokenNotPresent,
            cryptoki::context::Function::GetSlotList,
        )))?;
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = slot;
        self.login()
    }

    fn checkout(&self) -> Result<(Session, u64), PoolError> {
        let mut st = self.lock();
        let mut waited = false;
        loop {
            if let Some(s) = st.idle.pop() {
                st.in_use += 1;
                st.stats.high_water = st.stats.high_water.max(st.in_use);
                return Ok((s, st.generation));
            }
            if st.open < self.max {
                st.open += 1;
                st.in_use += 1;
                st.stats.high_water = st.stats.high_water.max(st.in_use);
                let generation = st.generation;
                drop(st);
                return match self.ctx.open_rw_session(self.slot()) {
                    Ok(s) => Ok((s, generation)),
                    Err(e) => {
                        let mut st = self.lock();
                        st.open -= 1;
                        st.in_use -= 1;
                        self.freed.notify_one();
                        Err(PoolError::Call(e))
                    }
                };
            }
            if !waited {
                st.stats.waits += 1;
                waited = true;
            }
            let (guard, timeout) = self
                .freed
                .wait_timeout(st, WAIT_LIMIT)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            if timeout.timed_out() && st.idle.is_empty() && st.open >= self.max {
                return Err(PoolError::Exhausted);
            }
        }
    }

    fn checkin(&self, session: Session, generation: u64, healthy: bool) {
        let mut st = self.lock();
        st.in_use -= 1;
        let discard = if healthy && generation == st.generation {
            st.idle.push(session);
            None
        } else {
            st.open -= 1;
            Some(session)
        };
        drop(st);
        self.freed.notify_one();
        // Closing a session is a module call; do it outside the lock.
        drop(discard);
    }
}
