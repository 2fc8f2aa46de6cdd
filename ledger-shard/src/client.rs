//! The client: blocking, thread-safe calls that route events to shards, wait for their
//! per-event results, and read linearizably.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam::channel::{self, Receiver};
use ledger_core::{
    Account, AccountBalance, AccountFilter, BATCH_EVENTS_MAX, CreateAccountResult,
    CreateTransferResult, Query, QueryReply, Transfer,
};

use crate::clock;
use crate::cluster::ClusterInner;
use crate::config::EVENTS_PER_CALL_MAX;
use crate::crossshard;
use crate::error::{Result, ShardError};
use crate::router::Route;
use crate::shard::{self, Events, Results, Submission};
use crate::wire::Read;

/// A call's events for one shard each (`(index, shard if known, event)`), and its posts of
/// cross-shard pending transfers with their indexes.
type LocatedPosts = (
    Vec<(usize, Option<usize>, Transfer)>,
    Vec<usize>,
    Vec<crossshard::CrossPost>,
);

/// One shard's share of a call in flight: the caller's event indexes and where the answer comes.
type Waiting = (Vec<usize>, Receiver<Result<Results>>);

/// A handle for calling the cluster: `Clone + Send + Sync`; every call blocks until its
/// events are committed on a majority and applied (or fails with a system error).
///
/// Concurrent calls to one shard are packed into shared log entries. A call whose leader
/// fails is retried on the new leader with the same bytes until the request timeout; events
/// that had committed before the failover report their original result (I3).
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClusterInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

impl Client {
    pub(crate) fn new(inner: Arc<ClusterInner>) -> Self {
        Self { inner }
    }

    /// Creates accounts; one result per account, in order. An account lives on shard
    /// `id % shards`. An id in the system range ([`ledger_core::SYSTEM_ID_MIN`] and up) answers
    /// `IdReservedForSystem` (its chain `LinkedEventFailed`) without being submitted.
    ///
    /// # Errors
    ///
    /// System failures only ([`ShardError::NoQuorum`], [`ShardError::Timeout`],
    /// [`ShardError::Shutdown`]), or [`ShardError::InvalidRequest`] for more than 8,190
    /// accounts or a linked chain spanning shards. Retrying the same ids is safe.
    ///
    /// # Panics
    ///
    /// Only on a bug: every event gets exactly one result.
    pub fn create_accounts(&self, accounts: &[Account]) -> Result<Vec<CreateAccountResult>> {
        check_event_count(accounts.len())?;
        let (mut preset, submit) = crossshard::plan_accounts(accounts);
        let accounts: Vec<Account> = submit.iter().map(|&index| accounts[index]).collect();
        let shards: Vec<usize> = accounts
            .iter()
            .map(|account| self.inner.router.shard_of(account.id))
            .collect();
        check_chains(&shards, |index| accounts[index].flags.linked())?;
        let results = self.submit_split(&shards, |indexes| {
            Events::Accounts(indexes.iter().map(|&index| accounts[index]).collect())
        })?;
        let results = merge(accounts.len(), results, |results| match results {
            Results::Accounts(results) => results,
            Results::Transfers(_) => Vec::new(),
        });
        for (index, result) in submit.into_iter().zip(results) {
            preset[index] = Some(result);
        }
        Ok(preset
            .into_iter()
            .map(|result| result.expect("every account has its result"))
            .collect())
    }

    /// Creates transfers; one result per transfer, in order. A transfer goes to the shard of
    /// its accounts (the shard of its pending transfer for a post or void naming no account).
    ///
    /// A transfer whose accounts live on two shards commits by two-phase commit across the two
    /// shards' Paxos groups (see `docs/crossshard.md`): its result is known once the debit
    /// shard has logged the decision durably, and it is as atomic and idempotent as any other
    /// (I3, I10). A pending one (also closing: each shard's leg closes its own account) is
    /// then posted or voided the same way, on both shards. A post
    /// or void whose accounts do not name one shard is located first (one read of every
    /// shard). Events naming an id in the system range ([`ledger_core::SYSTEM_ID_MIN`] and
    /// up) answer `IdReservedForSystem` (their chain `LinkedEventFailed`) without submission.
    ///
    /// # Errors
    ///
    /// As [`Client::create_accounts`], plus [`ShardError::CrossShard`] for a cross-shard
    /// transfer that is `BALANCING_CREDIT`, a linked chain spanning shards with an event
    /// that is not a plain or pending transfer (without timeout), or a post or void of a
    /// cross-shard pending transfer in a chain: those are not supported across shards yet,
    /// and nothing of the call is submitted. (A linked chain of plain and pending transfers
    /// spanning shards commits all or none.)
    ///
    /// # Panics
    ///
    /// Only on a bug: every event gets exactly one result.
    pub fn create_transfers(&self, transfers: &[Transfer]) -> Result<Vec<CreateTransferResult>> {
        check_event_count(transfers.len())?;
        let plan = crossshard::plan_transfers(self.inner.router, transfers)?;
        let deadline = clock::now() + self.inner.config.request_timeout;
        let (located, cross_post_indexes, cross_posts) =
            self.locate_posts(transfers, &plan, deadline)?;
        let local_indexes: Vec<usize> = located.iter().map(|(index, _, _)| *index).collect();
        let local: Vec<Transfer> = located.iter().map(|(_, _, event)| *event).collect();
        let shards = located
            .iter()
            .enumerate()
            .map(|(position, (_, shard, event))| match shard {
                Some(shard) => Ok(*shard),
                None => self.route_transfer(position, event),
            })
            .collect::<Result<Vec<usize>>>()?;
        check_chains(&shards, |index| local[index].flags.linked())?;
        let waiting = self.send_split(&shards, deadline, |indexes| {
            Events::Transfers(indexes.iter().map(|&index| local[index]).collect())
        })?;
        let cross_results = if plan.cross.is_empty() {
            Vec::new()
        } else {
            crossshard::execute(&self.inner, transfers, &plan.cross, deadline)?
        };
        let cross_post_results = if cross_posts.is_empty() {
            Vec::new()
        } else {
            crossshard::execute_posts(&self.inner, &cross_posts, deadline)?
        };
        let chain_results = if plan.chains.is_empty() {
            Vec::new()
        } else {
            let chains = plan
                .chains
                .iter()
                .map(|chain| transfers[chain.clone()].to_vec())
                .collect();
            crossshard::execute_chains(&self.inner, chains, deadline)?
        };
        let parts = self.wait_split(waiting)?;
        let local_results = merge(local.len(), parts, |results| match results {
            Results::Transfers(results) => results,
            Results::Accounts(_) => Vec::new(),
        });
        let mut results = plan.preset;
        for (index, result) in local_indexes.into_iter().zip(local_results) {
            results[index] = Some(result);
        }
        for (index, result) in plan.cross.into_iter().zip(cross_results) {
            results[index] = Some(result);
        }
        for (index, result) in cross_post_indexes.into_iter().zip(cross_post_results) {
            results[index] = Some(result);
        }
        for (chain, chain_results) in plan.chains.into_iter().zip(chain_results) {
            for (index, result) in chain.zip(chain_results) {
                results[index] = Some(result);
            }
        }
        Ok(results
            .into_iter()
            .map(|result| result.expect("every transfer has its result"))
            .collect())
    }

    /// The accounts with these ids that exist, in request order (linearizable, I9).
    ///
    /// # Errors
    ///
    /// System failures only.
    pub fn lookup_accounts(&self, ids: &[u128]) -> Result<Vec<Account>> {
        let router = self.inner.router;
        let mut found = HashMap::with_capacity(ids.len());
        self.lookup_split(
            ids,
            |id| router.shard_of(id)..router.shard_of(id) + 1,
            |shard, ids| match self.read(shard, Query::LookupAccounts(ids))? {
                QueryReply::Accounts(accounts) => {
                    found.extend(accounts.into_iter().map(|account| (account.id, account)));
                    Ok(())
                }
                _ => Err(unexpected_reply(shard)),
            },
        )?;
        Ok(ids.iter().filter_map(|id| found.get(id).copied()).collect())
    }

    /// The transfers with these ids that exist, in request order (linearizable, I9). A
    /// transfer lives on its accounts' shard, which its id does not tell: every shard is asked.
    /// A cross-shard transfer is found once committed, rebuilt from its two legs.
    ///
    /// # Errors
    ///
    /// System failures only.
    pub fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<Transfer>> {
        let shard_count = self.inner.shards.len();
        let mut found = HashMap::with_capacity(ids.len());
        self.lookup_split(
            ids,
            |_| 0..shard_count,
            |shard, ids| match self.read(shard, Query::LookupTransfers(ids))? {
                QueryReply::Transfers(transfers) => {
                    found.extend(
                        transfers
                            .into_iter()
                            .map(|transfer| (transfer.id, transfer)),
                    );
                    Ok(())
                }
                _ => Err(unexpected_reply(shard)),
            },
        )?;
        let missing: Vec<u128> = ids
            .iter()
            .copied()
            .filter(|id| !found.contains_key(id))
            .collect();
        if shard_count > 1 {
            let deadline = clock::now() + self.inner.config.request_timeout;
            crossshard::present_posts(&self.inner, &mut found, deadline)?;
            if !missing.is_empty() {
                found.extend(crossshard::lookup_committed(
                    &self.inner,
                    &missing,
                    deadline,
                )?);
            }
        }
        Ok(ids.iter().filter_map(|id| found.get(id).copied()).collect())
    }

    /// The transfers of one account, as the filter selects (linearizable, I9).
    ///
    /// # Errors
    ///
    /// System failures only.
    pub fn get_account_transfers(&self, filter: &AccountFilter) -> Result<Vec<Transfer>> {
        let shard = self.inner.router.shard_of(filter.account_id);
        match self.read(shard, Query::GetAccountTransfers(*filter))? {
            QueryReply::Transfers(transfers) => Ok(transfers),
            _ => Err(unexpected_reply(shard)),
        }
    }

    /// The balance history of one account (it needs the `HISTORY` flag), as the filter
    /// selects (linearizable, I9).
    ///
    /// # Errors
    ///
    /// System failures only.
    pub fn get_account_balances(&self, filter: &AccountFilter) -> Result<Vec<AccountBalance>> {
        let shard = self.inner.router.shard_of(filter.account_id);
        match self.read(shard, Query::GetAccountBalances(*filter))? {
            QueryReply::Balances(balances) => Ok(balances),
            _ => Err(unexpected_reply(shard)),
        }
    }

    /// Locates the pending transfers of a call's posts and voids that may live across shards
    /// (one read of every shard): returns the events for one shard each, in the caller's
    /// order, as `(index, shard if known, event)`, and the posts of cross-shard pending
    /// transfers with their indexes.
    fn locate_posts(
        &self,
        transfers: &[Transfer],
        plan: &crossshard::Plan,
        deadline: Instant,
    ) -> Result<LocatedPosts> {
        let mut local: Vec<(usize, Option<usize>, Transfer)> = plan
            .local
            .iter()
            .map(|&index| (index, None, transfers[index]))
            .collect();
        let (mut cross_indexes, mut cross) = (Vec::new(), Vec::new());
        if plan.posts.is_empty() {
            return Ok((local, cross_indexes, cross));
        }
        let posts: Vec<Transfer> = plan.posts.iter().map(|&index| transfers[index]).collect();
        let places = crossshard::locate_posts(&self.inner, &posts, deadline)?;
        for (&index, place) in plan.posts.iter().zip(places) {
            match place {
                crossshard::Located::Local { shard, event } => {
                    local.push((index, Some(shard), event));
                }
                crossshard::Located::Cross(post) => {
                    check_not_in_chain(transfers, index, post.shards())?;
                    cross_indexes.push(index);
                    cross.push(post);
                }
            }
        }
        local.sort_unstable_by_key(|(index, _, _)| *index);
        Ok((local, cross_indexes, cross))
    }

    /// The shard of a transfer at `index` of the local events (a transfer naming no account
    /// goes to shard 0, which rejects it); fails on a cross-shard transfer.
    fn route_transfer(&self, index: usize, transfer: &Transfer) -> Result<usize> {
        match self.inner.router.route(transfer) {
            Route::Shard(shard) => Ok(shard),
            Route::Cross {
                debit_shard,
                credit_shard,
            } => Err(ShardError::CrossShard {
                index,
                debit_shard,
                credit_shard,
            }),
            Route::Unknown => Ok(0),
        }
    }

    /// Submits each shard's share of a call, then waits for all of them.
    fn submit_split(
        &self,
        shards: &[usize],
        events: impl Fn(&[usize]) -> Events,
    ) -> Result<Vec<(Vec<usize>, Results)>> {
        let deadline = clock::now() + self.inner.config.request_timeout;
        let waiting = self.send_split(shards, deadline, events)?;
        self.wait_split(waiting)
    }

    /// Submits each shard's share of a call; returns what to wait for.
    fn send_split(
        &self,
        shards: &[usize],
        deadline: Instant,
        events: impl Fn(&[usize]) -> Events,
    ) -> Result<Vec<Waiting>> {
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); self.inner.shards.len()];
        for (index, &shard) in shards.iter().enumerate() {
            by_shard[shard].push(index);
        }
        let mut waiting = Vec::new();
        for (shard, indexes) in by_shard.into_iter().enumerate() {
            if indexes.is_empty() {
                continue;
            }
            let (reply, receiver) = channel::bounded(1);
            let submission = Submission {
                events: events(&indexes),
                deadline,
                reply,
            };
            self.send(shard, submission)?;
            waiting.push((indexes, receiver));
        }
        Ok(waiting)
    }

    /// Waits for the answers of [`Client::send_split`].
    fn wait_split(&self, waiting: Vec<Waiting>) -> Result<Vec<(Vec<usize>, Results)>> {
        waiting
            .into_iter()
            .map(|(indexes, receiver)| Ok((indexes, self.wait(&receiver)?)))
            .collect()
    }

    fn send(&self, shard: usize, submission: Submission) -> Result<()> {
        let submissions = &self.inner.shards[shard].submissions;
        crossbeam::select! {
            send(submissions, submission) -> sent => sent.map_err(|_| ShardError::Shutdown),
            recv(self.inner.shutdown) -> _ => Err(ShardError::Shutdown),
        }
    }

    fn wait(&self, receiver: &Receiver<Result<Results>>) -> Result<Results> {
        crossbeam::select! {
            recv(receiver) -> reply => reply.unwrap_or(Err(ShardError::Shutdown)),
            recv(self.inner.shutdown) -> _ => Err(ShardError::Shutdown),
        }
    }

    /// Groups ids by the shards `shards_of(id)` names and calls `read` per shard with at
    /// most [`BATCH_EVENTS_MAX`] ids at a time.
    fn lookup_split(
        &self,
        ids: &[u128],
        shards_of: impl Fn(u128) -> std::ops::Range<usize>,
        mut read: impl FnMut(usize, Vec<u128>) -> Result<()>,
    ) -> Result<()> {
        let mut by_shard: Vec<Vec<u128>> = vec![Vec::new(); self.inner.shards.len()];
        for &id in ids {
            for shard in shards_of(id) {
                by_shard[shard].push(id);
            }
        }
        for (shard, ids) in by_shard.into_iter().enumerate() {
            for chunk in ids.chunks(BATCH_EVENTS_MAX as usize) {
                read(shard, chunk.to_vec())?;
            }
        }
        Ok(())
    }

    fn read(&self, shard: usize, query: Query) -> Result<QueryReply> {
        let context = &self.inner.shards[shard].context;
        let read = Read::Ledger(query).encode();
        let deadline = clock::now() + self.inner.config.request_timeout;
        let reply = shard::with_leader(context, deadline, |backend, leader, timeout| {
            backend.read(leader, read.clone(), timeout)
        })?;
        QueryReply::decode(&reply).map_err(|source| ShardError::Codec { shard, source })
    }
}

fn check_event_count(event_count: usize) -> Result<()> {
    if event_count > EVENTS_PER_CALL_MAX {
        return Err(ShardError::InvalidRequest {
            reason: format!("{event_count} events in one call; at most {EVENTS_PER_CALL_MAX}"),
        });
    }
    Ok(())
}

/// Rejects a linked chain whose events go to different shards (accounts, or transfers whose
/// chain was planned for one shard but whose post was located on another): only chains of
/// plain transfers run across shards (`crossshard::execute_chains`).
fn check_chains(shards: &[usize], linked: impl Fn(usize) -> bool) -> Result<()> {
    let mut chain_shard: Option<usize> = None;
    for (index, &shard) in shards.iter().enumerate() {
        if let Some(chain_shard) = chain_shard.filter(|&chain_shard| chain_shard != shard) {
            return Err(ShardError::CrossShard {
                index,
                debit_shard: chain_shard,
                credit_shard: shard,
            });
        }
        chain_shard = linked(index).then_some(shard);
    }
    Ok(())
}

/// Rejects a post or void of a cross-shard pending transfer inside a linked chain (not built:
/// the chain would span shards).
fn check_not_in_chain(
    transfers: &[Transfer],
    index: usize,
    (debit_shard, credit_shard): (usize, usize),
) -> Result<()> {
    let linked = transfers[index].flags.linked()
        || index
            .checked_sub(1)
            .is_some_and(|previous| transfers[previous].flags.linked());
    if linked {
        return Err(ShardError::CrossShard {
            index,
            debit_shard,
            credit_shard,
        });
    }
    Ok(())
}

/// Puts each shard's results back at their events' positions in the caller's batch.
fn merge<R: Copy>(
    event_count: usize,
    parts: Vec<(Vec<usize>, Results)>,
    unpack: impl Fn(Results) -> Vec<R>,
) -> Vec<R> {
    let mut merged: Vec<Option<R>> = vec![None; event_count];
    for (indexes, results) in parts {
        let results = unpack(results);
        assert_eq!(indexes.len(), results.len(), "one result per event");
        for (index, result) in indexes.into_iter().zip(results) {
            merged[index] = Some(result);
        }
    }
    let merged: Vec<R> = merged.into_iter().flatten().collect();
    assert_eq!(merged.len(), event_count, "every event has its result");
    merged
}

fn unexpected_reply(shard: usize) -> ShardError {
    ShardError::InvalidRequest {
        reason: format!("shard {shard}: reply of the wrong kind"),
    }
}
