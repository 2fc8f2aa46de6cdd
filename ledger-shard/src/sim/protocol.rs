//! The simulator's side of the cross-shard protocol: the real sans-IO core
//! ([`crate::crossshard_protocol`]) decides every step; this module only turns its actions into
//! requests to shards and the answers back into its replies. A machine's action is sent as one
//! round of requests (one per shard it names, all at once); the round's answers, once all are
//! in, are its reply.

use ledger_core::{CreateTransferResult as R, Query, QueryReply, Transfer};

use crate::crossshard::protocol as core;
use crate::router::Router;
use crate::wire::Read;

/// One request of a round, to one shard.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    /// Create these transfers (one log entry).
    Transfers {
        shard: usize,
        transfers: Vec<Transfer>,
    },
    /// Create these accounts (one log entry; the simulator's setup).
    Accounts {
        shard: usize,
        accounts: Vec<ledger_core::Account>,
    },
    /// A linearizable read.
    Read { shard: usize, read: Read },
}

impl Request {
    pub(crate) fn shard(&self) -> usize {
        match self {
            Self::Transfers { shard, .. }
            | Self::Accounts { shard, .. }
            | Self::Read { shard, .. } => *shard,
        }
    }
}

/// The answer to one request.
#[derive(Debug, Clone)]
pub(crate) enum Response {
    Transfers(Vec<R>),
    Accounts(Vec<ledger_core::CreateAccountResult>),
    Query(QueryReply),
    /// The answer to `Read::Unresolved`: the shard's ledger time and entries.
    Unresolved(core::Unresolved),
    /// The request's deadline passed (no quorum, timeouts).
    Failed,
}

/// The protocol step a call just completed (a crash may be injected before the next one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// The coordinators logged their pending legs (the votes are next).
    Prepared = 1,
    /// The participants logged their votes (the decisions are next).
    Voted = 2,
    /// The coordinators logged the decisions (the answer and step 4 are next).
    Decided = 3,
}

/// What a driven machine wants next.
#[derive(Debug)]
pub(crate) enum Next<T> {
    /// Send this round; `phase` is the protocol step it carries (lookups: none).
    Send {
        requests: Vec<Request>,
        phase: Option<core::Phase>,
    },
    /// Finished.
    Done(T),
}

/// A core machine and the shape of the round it waits for.
#[derive(Debug)]
pub(crate) struct Driven<M> {
    machine: M,
    /// The shards of the round in flight, in request order, and whether it is a lookup.
    round: (Vec<usize>, bool),
    shard_count: usize,
}

impl<M: core::Machine> Driven<M> {
    /// Wraps `machine` and turns its first action into a round.
    pub(crate) fn start(
        machine: M,
        first: core::Action<M::Outcome>,
        shard_count: usize,
    ) -> (Self, Next<M::Outcome>) {
        let mut driven = Self {
            machine,
            round: (Vec::new(), false),
            shard_count,
        };
        let next = driven.round_of(first);
        (driven, next)
    }

    /// The machine.
    pub(crate) fn machine(&self) -> &M {
        &self.machine
    }

    /// Hands the round's answers to the machine and turns its next action into a round.
    /// `Ok(None)` when a request failed (the machine is abandoned, as the threaded executor
    /// abandons it); `Err` when the core reports a protocol violation.
    pub(crate) fn advance(
        &mut self,
        answers: &[Response],
    ) -> Result<Option<Next<M::Outcome>>, String> {
        let (shards, is_lookup) = std::mem::take(&mut self.round);
        if answers
            .iter()
            .any(|answer| matches!(answer, Response::Failed))
        {
            return Ok(None);
        }
        let reply = if is_lookup {
            let mut found = vec![Vec::new(); self.shard_count];
            for (&shard, answer) in shards.iter().zip(answers) {
                let Response::Query(QueryReply::Transfers(transfers)) = answer else {
                    return Err(format!("shard {shard}: a lookup answered {answer:?}"));
                };
                found[shard].clone_from(transfers);
            }
            core::Reply::Found(found)
        } else {
            let mut submitted = vec![Vec::new(); self.shard_count];
            for (&shard, answer) in shards.iter().zip(answers) {
                let Response::Transfers(results) = answer else {
                    return Err(format!("shard {shard}: a submission answered {answer:?}"));
                };
                submitted[shard].clone_from(results);
            }
            core::Reply::Submitted(submitted)
        };
        let action = self
            .machine
            .step(reply)
            .map_err(|error| format!("the protocol core reports: {error}"))?;
        Ok(Some(self.round_of(action)))
    }

    fn round_of(&mut self, action: core::Action<M::Outcome>) -> Next<M::Outcome> {
        match action {
            core::Action::Submit { phase, per_shard } => {
                let mut shards = Vec::new();
                let mut requests = Vec::new();
                for (shard, transfers) in per_shard.into_iter().enumerate() {
                    if !transfers.is_empty() {
                        shards.push(shard);
                        requests.push(Request::Transfers { shard, transfers });
                    }
                }
                self.round = (shards, false);
                Next::Send {
                    requests,
                    phase: Some(phase),
                }
            }
            core::Action::Lookup { per_shard } => {
                let mut shards = Vec::new();
                let mut requests = Vec::new();
                for (shard, ids) in per_shard.into_iter().enumerate() {
                    if !ids.is_empty() {
                        shards.push(shard);
                        requests.push(Request::Read {
                            shard,
                            read: Read::Ledger(Query::LookupTransfers(ids)),
                        });
                    }
                }
                self.round = (shards, true);
                Next::Send {
                    requests,
                    phase: None,
                }
            }
            core::Action::Done(outcome) => Next::Done(outcome),
        }
    }
}

/// The step a call has completed when its machine asks for `phase` next.
pub(crate) fn completed_before(phase: Option<core::Phase>) -> Option<Step> {
    match phase {
        Some(core::Phase::Vote) => Some(Step::Prepared),
        Some(core::Phase::Decide) => Some(Step::Voted),
        _ => None,
    }
}

/// A call's machine over `transfers` (valid, cross-shard, bridges created).
pub(crate) fn call(
    router: Router,
    transfers: &[Transfer],
) -> (Driven<core::CallMachine>, Next<core::CallOutcome>) {
    let crosses = transfers
        .iter()
        .map(|transfer| core::Cross::new(router, *transfer));
    let (machine, first) = core::CallMachine::new(router, crosses);
    Driven::start(machine, first, router.shard_count())
}

/// Step 4's machine for a call's decisions.
pub(crate) fn finish(
    router: Router,
    work: &[(core::Cross, core::Decision)],
) -> (Driven<core::FinishMachine>, Next<()>) {
    let (machine, first) = core::FinishMachine::new(router, work);
    Driven::start(machine, first, router.shard_count())
}

/// A locate machine for one user's post or void.
pub(crate) fn locate(
    router: Router,
    post: Transfer,
) -> (Driven<core::LocateMachine>, Next<Vec<core::Located>>) {
    let (machine, first) = core::LocateMachine::new(router, vec![post]);
    Driven::start(machine, first, router.shard_count())
}

/// The machine of a located user's post or void of a cross-shard pending transfer.
pub(crate) fn post(
    router: Router,
    post: core::CrossPost,
) -> (Driven<core::PostMachine>, Next<core::PostOutcome>) {
    let (machine, first) = core::PostMachine::new(router, vec![post]);
    Driven::start(machine, first, router.shard_count())
}

/// The participants' application and the coordinators' acknowledgement of logged posts.
pub(crate) fn post_finish(
    router: Router,
    logged: Vec<Transfer>,
) -> (Driven<core::PostFinishMachine>, Next<()>) {
    let (machine, first) = core::PostFinishMachine::new(router, logged);
    Driven::start(machine, first, router.shard_count())
}

/// The machine of one linked chain spanning shards (its bridges created).
pub(crate) fn chain(
    router: Router,
    events: &[Transfer],
) -> (Driven<core::ChainMachine>, Next<Vec<Vec<R>>>) {
    let (machine, first) = core::ChainMachine::new(router, vec![events.to_vec()]);
    Driven::start(machine, first, router.shard_count())
}

/// A recovery's machine.
pub(crate) fn recovery(
    router: Router,
    recovery: core::Recovery,
) -> (Driven<core::RecoveryMachine>, Next<()>) {
    let (machine, first) = core::RecoveryMachine::new(router, recovery);
    Driven::start(machine, first, router.shard_count())
}

/// The resolver's scan: `Read::Unresolved` on every shard.
pub(crate) fn scan(shard_count: usize) -> Vec<Request> {
    (0..shard_count)
        .map(|shard| Request::Read {
            shard,
            read: Read::Unresolved,
        })
        .collect()
}

/// The scan's answers as the core's resolver takes them (`None`: unreadable).
pub(crate) fn scanned(answers: &[Response]) -> Vec<Option<core::Unresolved>> {
    answers
        .iter()
        .map(|answer| match answer {
            Response::Unresolved(read) => Some(read.clone()),
            _ => None,
        })
        .collect()
}
