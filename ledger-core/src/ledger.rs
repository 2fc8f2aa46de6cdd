//! The ledger state machine: accounts and transfers in memory, applied batch by batch.
//!
//! ```text
//!  Command (a batch) + entry timestamp
//!        │
//!        ▼
//!  begin_batch: event timestamps max(timestamp, last + 1) + i; expire pending transfers whose
//!        │      deadline ≤ the first event's timestamp, in (deadline, timestamp) order
//!        ▼
//!  per event: linked chain bookkeeping ── create_account / create_transfer (rules in the
//!        │    precedence order of the result enums) ── on a chain failure: rollback_chain
//!        ▼
//!  Vec<result> (one per event)
//! ```
//!
//! Layout, chosen for one core doing millions of transfers per second:
//! - accounts and transfers live in dense chunked arrays in creation order (a transfer's index
//!   orders it by timestamp), found by id through compact [`IdIndex`] tables;
//! - each stored transfer shares a 144-byte slot with 12 bytes of metadata: its place in the
//!   debit and the credit account's history (a linked list of u32 indices, newest first) and its
//!   pending status;
//! - `create_transfers` prefetches the index slots of the event 8 ahead and the account records
//!   of the event 4 ahead, so the cache misses of several events overlap;
//! - nothing is allocated per transfer except amortised chunk and table growth.
//!
//! Linked chains roll back by truncation: everything a chain creates is appended, so undoing
//! it pops the tails; the few in-place changes (account balances and flags, a pending
//! transfer's status) are recorded in an undo log only while a chain is open. An event outside
//! any chain pays one predictable branch.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::chunked::Chunked;
use crate::hash::{INDEX_MAX, IdIndex, Probe, hash_id};
use crate::resolution::ResolutionPost;
use crate::store::Closing;
use crate::{
    Account, AccountBalance, AccountFlags, Command, CreateAccountResult, CreateTransferResult,
    Reply, Transfer,
};

/// How many events ahead `create_transfers` prefetches index slots (records: half as far).
const PREFETCH_DISTANCE: usize = 8;

/// Events whose accounts `create_transfers` resolves before applying them.
const RESOLVE_CHUNK: usize = 512;

/// Size of the ring of precomputed event hashes (a power of two above the distance).
const PREFETCH_RING: usize = 16;
const _: () = assert!(PREFETCH_RING > PREFETCH_DISTANCE);

/// How many events ahead a post's or void's pending transfer is looked for: its index slot
/// this far ahead, its record half as far. Twice [`PREFETCH_DISTANCE`]: the record's address
/// is read from the slot, so the slot must have arrived (through a TLB miss, often) first.
const PENDING_PREFETCH_DISTANCE: usize = 16;

/// Size of the ring of upcoming pending ids' hashes (a power of two above the distance).
const PENDING_PREFETCH_RING: usize = 32;
const _: () = assert!(PENDING_PREFETCH_RING > PENDING_PREFETCH_DISTANCE);

/// "No index": the end of a history list.
pub(crate) const NONE: u32 = u32::MAX;

/// Nanoseconds per second of a pending transfer's `timeout`.
pub(crate) const NANOSECONDS_PER_SECOND: u64 = 1_000_000_000;

/// The status of a stored transfer (only pending transfers leave `NotPending`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Status {
    NotPending = 0,
    Pending = 1,
    Posted = 2,
    Voided = 3,
    Expired = 4,
    /// Posted by its system resolution, which stored no record of its own
    /// ([`crate::resolution`]); `TransferMeta::resolution` names it. Reads and snapshots show
    /// it as `Posted` (so it never comes out of a snapshot's status bytes).
    PostedByResolution = 5,
}

impl Status {
    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        [
            Self::NotPending,
            Self::Pending,
            Self::Posted,
            Self::Voided,
            Self::Expired,
        ]
        .get(usize::from(byte))
        .copied()
    }
}

/// An account as stored: exactly two aligned cache lines, the fields a transfer reads and
/// writes (id, balances, ledger, flags, history heads) first. `user_data_32` lives in a side
/// array and `reserved` is always zero, so the record fits 128 bytes with the list heads.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct AccountSlot {
    pub(crate) id: u128,
    pub(crate) debits_pending: u128,
    pub(crate) debits_posted: u128,
    pub(crate) credits_pending: u128,
    pub(crate) credits_posted: u128,
    pub(crate) ledger: u32,
    pub(crate) code: u16,
    pub(crate) flags: AccountFlags,
    /// Index of the newest transfer touching the account, or [`NONE`].
    pub(crate) transfers_newest: u32,
    /// Index of the newest balance entry (`HISTORY` accounts), or [`NONE`].
    pub(crate) balances_newest: u32,
    pub(crate) user_data_128: u128,
    pub(crate) user_data_64: u64,
    pub(crate) timestamp: u64,
}

const _: () = assert!(size_of::<AccountSlot>() == 128);

impl AccountSlot {
    /// The stored form of `account` (whose `reserved` is zero), with empty history lists.
    pub(crate) fn new(account: &Account) -> Self {
        Self {
            id: account.id,
            debits_pending: account.debits_pending,
            debits_posted: account.debits_posted,
            credits_pending: account.credits_pending,
            credits_posted: account.credits_posted,
            ledger: account.ledger,
            code: account.code,
            flags: account.flags,
            transfers_newest: NONE,
            balances_newest: NONE,
            user_data_128: account.user_data_128,
            user_data_64: account.user_data_64,
            timestamp: account.timestamp,
        }
    }

    /// The account record, given its `user_data_32` from the side array.
    pub(crate) fn account(&self, user_data_32: u32) -> Account {
        Account {
            id: self.id,
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
            user_data_128: self.user_data_128,
            user_data_64: self.user_data_64,
            user_data_32,
            reserved: 0,
            ledger: self.ledger,
            code: self.code,
            flags: self.flags,
            timestamp: self.timestamp,
        }
    }
}

/// Per-transfer metadata kept beside the 128-byte record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TransferMeta {
    /// The debit account's previous (older) transfer, or [`NONE`].
    pub(crate) debit_previous: u32,
    /// The credit account's previous (older) transfer, or [`NONE`].
    pub(crate) credit_previous: u32,
    /// With status [`Status::PostedByResolution`]: the index of the post in
    /// `Ledger::resolutions`; otherwise unused ([`NONE`] when stored).
    pub(crate) resolution: u32,
    pub(crate) status: Status,
}

const _: () = assert!(size_of::<StoredTransfer>() == 144);

/// A transfer record with its metadata: one push, one place in memory (144 bytes, the same
/// as without `TransferMeta::resolution`: it fills what was padding).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoredTransfer {
    pub(crate) transfer: Transfer,
    pub(crate) meta: TransferMeta,
}

/// One balance snapshot of a `HISTORY` account.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BalanceEntry {
    pub(crate) balance: AccountBalance,
    pub(crate) account_index: u32,
    pub(crate) transfer_index: u32,
    /// The same account's previous entry, or [`NONE`].
    pub(crate) previous: u32,
}

/// An in-place change made inside an open linked chain, undone if the chain fails.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Undo {
    Account(u32, AccountSlot),
    Status(u32, Status),
}

/// Where an open chain began: the lengths to truncate back to.
#[derive(Clone, Copy, Debug)]
struct ChainStart {
    event_index: usize,
    account_count: usize,
    transfer_count: usize,
    resolution_count: usize,
    balance_count: usize,
}

/// Heap bytes held by a [`Ledger`], counted from capacities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Account records and their list heads.
    pub accounts_bytes: usize,
    /// The account id index.
    pub account_index_bytes: usize,
    /// Transfer records and their metadata, and the posts stored as no record.
    pub transfers_bytes: usize,
    /// The transfer id index.
    pub transfer_index_bytes: usize,
    /// Balance history, burnt ids and the expiry queue.
    pub other_bytes: usize,
}

impl MemoryUsage {
    /// The sum of all parts.
    pub fn total_bytes(&self) -> usize {
        self.accounts_bytes
            + self.account_index_bytes
            + self.transfers_bytes
            + self.transfer_index_bytes
            + self.other_bytes
    }
}

/// The pure, deterministic ledger state machine (I5, I12): no clock, no randomness, no I/O.
///
/// # Examples
/// ```
/// use ledger_core::{Account, AccountFlags, CreateTransferResult, Ledger, Transfer};
/// let mut ledger = Ledger::new();
/// let bank = Account::new(1, 700, 1);
/// let alice = Account {
///     flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
///     ..Account::new(2, 700, 1)
/// };
/// assert!(ledger.create_accounts(&[bank, alice], 1_000).iter().all(|r| r.is_ok()));
/// let results = ledger.create_transfers(
///     &[Transfer::new(10, 1, 2, 100, 700, 1), Transfer::new(11, 2, 1, 500, 700, 1)],
///     2_000,
/// );
/// assert_eq!(results, [CreateTransferResult::Ok, CreateTransferResult::ExceedsCredits]);
/// assert_eq!(ledger.lookup_accounts(&[2])[0].credits_posted, 100);
/// ledger.check_invariants()?;
/// # Ok::<(), ledger_core::InvariantViolation>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub(crate) accounts: Chunked<AccountSlot>,
    /// `user_data_32` of each account (kept out of the hot 128-byte slot).
    pub(crate) account_user_data_32: Chunked<u32>,
    pub(crate) account_index: IdIndex,
    pub(crate) transfers: Chunked<StoredTransfer>,
    pub(crate) transfer_index: IdIndex,
    /// The posts that stored no record (system resolutions, see [`crate::resolution`]), in
    /// the order they applied (so by timestamp).
    pub(crate) resolutions: Chunked<ResolutionPost>,
    /// Ids of transfers that failed with a transient result, in order (I3).
    pub(crate) failed_ids: Vec<u128>,
    pub(crate) failed_index: IdIndex,
    pub(crate) balances: Vec<BalanceEntry>,
    /// Pending transfers with a timeout, by (deadline, index). Entries may be stale (posted,
    /// voided, rolled back); they are checked when popped.
    pub(crate) expiry_queue: BinaryHeap<Reverse<(u64, u32)>>,
    pub(crate) undo: Vec<Undo>,
    /// Scratch space of `create_transfers`: each event's account indices (kept to reuse).
    pub(crate) scratch_accounts: Vec<[u32; 2]>,
    /// The posts and voids the last `create_transfers` applied, by event (see
    /// [`Ledger::last_batch_closings`]).
    pub(crate) closings: Vec<Closing>,
    pub(crate) last_timestamp: u64,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty ledger whose id indexes are sized for `account_count_max` accounts and
    /// `transfer_count_max` transfers, so they never double (and stall a batch) below that.
    /// Records themselves are allocated in 2 MiB chunks as they arrive.
    ///
    /// For large ledgers, run the process with transparent huge pages for malloc
    /// (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` on glibc with THP in `madvise` mode): with
    /// 4 KiB pages random account accesses miss the TLB (see BENCHMARKS.md).
    ///
    /// # Examples
    /// ```
    /// use ledger_core::Ledger;
    /// let ledger = Ledger::with_capacity(1_000, 100_000);
    /// assert!(ledger.memory_usage().transfer_index_bytes >= 100_000 * 16);
    /// ```
    pub fn with_capacity(account_count_max: usize, transfer_count_max: usize) -> Self {
        let mut ledger = Self::default();
        ledger.account_index.reserve(account_count_max);
        ledger.transfer_index.reserve(transfer_count_max);
        ledger
    }

    /// Number of accounts.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Number of stored transfers.
    pub fn transfer_count(&self) -> usize {
        self.transfers.len()
    }

    /// The timestamp of the last applied event (0 before any).
    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp
    }

    /// Heap bytes held, by part.
    pub fn memory_usage(&self) -> MemoryUsage {
        MemoryUsage {
            accounts_bytes: self.accounts.capacity_bytes()
                + self.account_user_data_32.capacity_bytes(),
            account_index_bytes: self.account_index.capacity_bytes(),
            transfers_bytes: self.transfers.capacity_bytes() + self.resolutions.capacity_bytes(),
            transfer_index_bytes: self.transfer_index.capacity_bytes(),
            other_bytes: self.balances.capacity() * size_of::<BalanceEntry>()
                + self.failed_ids.capacity() * size_of::<u128>()
                + self.failed_index.capacity_bytes()
                + self.expiry_queue.capacity() * size_of::<Reverse<(u64, u32)>>()
                + self.undo.capacity() * size_of::<Undo>()
                + self.closings.capacity() * size_of::<Closing>(),
        }
    }

    /// Applies one command of a chosen log entry; `timestamp` is the entry's leader timestamp
    /// in nanoseconds.
    ///
    /// # Panics
    /// If the event timestamps would overflow u64 (a clock 584 years past the epoch).
    pub fn apply(&mut self, command: &Command, timestamp: u64) -> Reply {
        match command {
            Command::CreateAccounts(accounts) => {
                Reply::CreateAccounts(self.create_accounts(accounts, timestamp))
            }
            Command::CreateTransfers(transfers) => {
                Reply::CreateTransfers(self.create_transfers(transfers, timestamp))
            }
        }
    }

    /// Creates accounts, one result per event. See [`CreateAccountResult`] for the rules.
    ///
    /// # Panics
    /// If the event timestamps would overflow u64.
    pub fn create_accounts(
        &mut self,
        accounts: &[Account],
        timestamp: u64,
    ) -> Vec<CreateAccountResult> {
        let mut results = vec![CreateAccountResult::Ok; accounts.len()];
        let Some(base) = self.begin_batch(accounts.len(), timestamp) else {
            return results;
        };
        self.account_index.reserve(accounts.len());
        let mut chain: Option<ChainStart> = None;
        let mut chain_failed = false;
        for (index, account) in accounts.iter().enumerate() {
            let linked = account.flags.linked();
            if linked && chain.is_none() {
                chain = Some(self.begin_chain(index));
            }
            let result = if chain_failed {
                CreateAccountResult::LinkedEventFailed
            } else if linked && index + 1 == accounts.len() {
                CreateAccountResult::LinkedEventChainOpen
            } else {
                self.create_account(account, base + index as u64)
            };
            results[index] = result;
            if let Some(start) = chain {
                if !result.is_ok() && !chain_failed {
                    chain_failed = true;
                    self.rollback_chain(start);
                    results[start.event_index..index].fill(CreateAccountResult::LinkedEventFailed);
                }
                if !linked {
                    chain = None;
                    chain_failed = false;
                }
            }
        }
        self.end_batch();
        results
    }

    /// Creates transfers, one result per event. See [`CreateTransferResult`] for the rules.
    ///
    /// # Panics
    /// If the event timestamps would overflow u64.
    pub fn create_transfers(
        &mut self,
        transfers: &[Transfer],
        timestamp: u64,
    ) -> Vec<CreateTransferResult> {
        let mut results = vec![CreateTransferResult::Ok; transfers.len()];
        self.closings.clear();
        let Some(base) = self.begin_batch(transfers.len(), timestamp) else {
            return results;
        };
        self.transfer_index.reserve(transfers.len());
        self.failed_index.reserve(transfers.len());
        let mut chain: Option<ChainStart> = None;
        let mut chain_failed = false;
        // Pass 1 resolves the two accounts of each event of a chunk (a transfer batch never
        // creates or removes an account, so the indices stay valid) and the lookups of many
        // events overlap in a tight loop; pass 2 applies the chunk while its account slots are
        // still in L2 (512 events touch at most 128 KiB of them).
        let mut accounts = std::mem::take(&mut self.scratch_accounts);
        let mut id_hashes = [0_u64; PREFETCH_RING];
        // The hash of each upcoming post's or void's pending id, for its second stage.
        let mut pending_hashes = [None::<u64>; PENDING_PREFETCH_RING];
        for (ahead, transfer) in transfers.iter().enumerate().take(PREFETCH_DISTANCE) {
            id_hashes[ahead % PREFETCH_RING] = hash_id(transfer.id);
        }
        for (ahead, transfer) in transfers.iter().enumerate().take(PENDING_PREFETCH_DISTANCE) {
            pending_hashes[ahead % PENDING_PREFETCH_RING] =
                post_or_void_pending_id(transfer).map(hash_id);
        }
        for (index, transfer) in transfers.iter().enumerate() {
            let offset = index % RESOLVE_CHUNK;
            if offset == 0 {
                let end = transfers.len().min(index + RESOLVE_CHUNK);
                self.create_transfers_resolve_accounts(&transfers[index..end], &mut accounts);
            }
            if let Some(ahead) = transfers.get(index + PREFETCH_DISTANCE) {
                let hash = hash_id(ahead.id);
                self.transfer_index.prefetch(hash);
                id_hashes[(index + PREFETCH_DISTANCE) % PREFETCH_RING] = hash;
            }
            if let Some(ahead) = accounts.get(offset + PREFETCH_DISTANCE / 2) {
                self.prefetch_accounts(*ahead);
            }
            self.prefetch_pending_transfers(transfers, index, &mut pending_hashes);
            let linked = transfer.flags.linked();
            if linked && chain.is_none() {
                chain = Some(self.begin_chain(index));
            }
            let result = if chain_failed {
                CreateTransferResult::LinkedEventFailed
            } else if linked && index + 1 == transfers.len() {
                CreateTransferResult::LinkedEventChainOpen
            } else {
                let event = (
                    id_hashes[index % PREFETCH_RING],
                    accounts[offset],
                    index as u32,
                );
                self.create_transfer(transfer, event, base + index as u64, chain.is_some())
            };
            results[index] = result;
            if let Some(start) = chain {
                if !result.is_ok() && !chain_failed {
                    chain_failed = true;
                    self.rollback_chain(start);
                    results[start.event_index..index].fill(CreateTransferResult::LinkedEventFailed);
                }
                if !linked {
                    chain = None;
                    chain_failed = false;
                }
            }
            if result.is_transient() {
                self.burn_id(transfer.id);
            }
        }
        self.scratch_accounts = accounts;
        self.end_batch();
        results
    }

    /// A post or void also finds its pending transfer, in two stages ahead of event `index`:
    /// the index slot of its pending id (hash kept in `hashes`)
    /// [`PENDING_PREFETCH_DISTANCE`] events ahead, then the record that slot names at half of
    /// that.
    #[inline]
    fn prefetch_pending_transfers(
        &self,
        transfers: &[Transfer],
        index: usize,
        hashes: &mut [Option<u64>; PENDING_PREFETCH_RING],
    ) {
        let ahead = (index + PENDING_PREFETCH_DISTANCE) % PENDING_PREFETCH_RING;
        hashes[ahead] = transfers
            .get(index + PENDING_PREFETCH_DISTANCE)
            .and_then(post_or_void_pending_id)
            .map(hash_id);
        if let Some(hash) = hashes[ahead] {
            self.transfer_index.prefetch(hash);
        }
        if let Some(hash) = hashes[(index + PENDING_PREFETCH_DISTANCE / 2) % PENDING_PREFETCH_RING]
            && let Some(candidate) = self.transfer_index.peek(hash)
            && (candidate as usize) < self.transfers.len()
        {
            crate::prefetch::prefetch(self.transfers.get(candidate as usize));
        }
    }

    /// Pass 1 of `create_transfers`: the dense indices of each event's debit and credit
    /// account ([`NONE`] if absent), with the index slots prefetched a few events ahead.
    fn create_transfers_resolve_accounts(&self, transfers: &[Transfer], out: &mut Vec<[u32; 2]>) {
        out.clear();
        out.reserve(transfers.len());
        let mut hashes = [[0_u64; 2]; PREFETCH_RING];
        let hashes_of = |transfer: &Transfer| {
            [
                hash_id(transfer.debit_account_id),
                hash_id(transfer.credit_account_id),
            ]
        };
        for (ahead, transfer) in transfers.iter().enumerate().take(PREFETCH_DISTANCE) {
            hashes[ahead % PREFETCH_RING] = hashes_of(transfer);
        }
        for (index, transfer) in transfers.iter().enumerate() {
            if let Some(ahead) = transfers.get(index + PREFETCH_DISTANCE) {
                let ahead_hashes = hashes_of(ahead);
                self.account_index.prefetch(ahead_hashes[0]);
                self.account_index.prefetch(ahead_hashes[1]);
                hashes[(index + PREFETCH_DISTANCE) % PREFETCH_RING] = ahead_hashes;
            }
            let [debit_hash, credit_hash] = hashes[index % PREFETCH_RING];
            let debit = self.account_index_of_hashed(transfer.debit_account_id, debit_hash);
            let credit = self.account_index_of_hashed(transfer.credit_account_id, credit_hash);
            let resolved = [debit.unwrap_or(NONE), credit.unwrap_or(NONE)];
            self.prefetch_accounts(resolved);
            out.push(resolved);
        }
    }

    #[inline]
    fn prefetch_accounts(&self, accounts: [u32; 2]) {
        for index in accounts {
            if (index as usize) < self.accounts.len() {
                crate::prefetch::prefetch(self.accounts.get(index as usize));
            }
        }
    }

    /// Assigns the batch's timestamps and expires what is due; `None` for an empty batch
    /// (which changes nothing).
    fn begin_batch(&mut self, event_count: usize, timestamp: u64) -> Option<u64> {
        if event_count == 0 {
            return None;
        }
        let base = timestamp.max(self.last_timestamp.saturating_add(1));
        let last = base.checked_add(event_count as u64 - 1);
        assert!(
            last.is_some_and(|last| last < u64::MAX),
            "event timestamps overflow u64"
        );
        self.last_timestamp = last.unwrap_or(u64::MAX);
        self.expire_pending_transfers(base);
        Some(base)
    }

    fn end_batch(&mut self) {
        assert!(self.undo.is_empty() || self.undo.len() <= self.undo.capacity());
        self.undo.clear();
        if cfg!(debug_assertions) && self.transfers.len() + self.accounts.len() <= 1 << 14 {
            if let Err(violation) = self.check_invariants() {
                panic!("invariant broken after a batch: {violation}");
            }
        }
    }

    fn begin_chain(&mut self, event_index: usize) -> ChainStart {
        self.undo.clear();
        ChainStart {
            event_index,
            account_count: self.accounts.len(),
            transfer_count: self.transfers.len(),
            resolution_count: self.resolutions.len(),
            balance_count: self.balances.len(),
        }
    }

    /// Undoes everything the open chain did: in-place changes from the undo log (newest first),
    /// then the appended accounts, transfers and balance entries.
    fn rollback_chain(&mut self, start: ChainStart) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Account(index, slot) => *self.accounts.get_mut(index as usize) = slot,
                Undo::Status(index, status) => {
                    self.transfers.get_mut(index as usize).meta.status = status;
                }
            }
        }
        while self
            .closings
            .last()
            .is_some_and(|closing| closing.event as usize >= start.event_index)
        {
            self.closings.pop();
        }
        while self.resolutions.len() > start.resolution_count {
            self.resolutions.pop();
        }
        while self.transfers.len() > start.transfer_count {
            let index = self.transfers.len() - 1;
            let id = self.transfers.get(index).transfer.id;
            self.transfer_index.remove(hash_id(id), index as u32);
            self.transfers.pop();
        }
        while self.accounts.len() > start.account_count {
            let index = self.accounts.len() - 1;
            let id = self.accounts.get(index).id;
            self.account_index.remove(hash_id(id), index as u32);
            self.accounts.pop();
            self.account_user_data_32.pop();
        }
        self.balances.truncate(start.balance_count);
    }

    /// Remembers a transient failure so a retry of the id answers `IdAlreadyFailed` (I3).
    fn burn_id(&mut self, id: u128) {
        let hash = hash_id(id);
        let failed_ids = &self.failed_ids;
        if let Probe::Vacant(position) = self
            .failed_index
            .find(hash, |i| failed_ids[i as usize] == id)
        {
            let index = self.failed_ids.len();
            assert!(index <= INDEX_MAX as usize);
            self.failed_index.insert_at(position, hash, index as u32);
            self.failed_ids.push(id);
        }
    }

    /// Expires every pending transfer whose deadline is at or before `timestamp`, in
    /// (deadline, creation) order, releasing its reservation and reopening accounts it closed.
    fn expire_pending_transfers(&mut self, timestamp: u64) {
        while let Some(&Reverse((deadline, index))) = self.expiry_queue.peek() {
            if deadline > timestamp {
                break;
            }
            self.expiry_queue.pop();
            let index = index as usize;
            // Stale entries: rolled back (index reused or gone), already posted or voided.
            if index >= self.transfers.len()
                || self.transfers.get(index).meta.status != Status::Pending
            {
                continue;
            }
            let pending = self.transfers.get(index).transfer;
            if pending_deadline(&pending) != Some(deadline) {
                continue;
            }
            self.transfers.get_mut(index).meta.status = Status::Expired;
            let debit = self
                .account_index_of(pending.debit_account_id)
                .expect("I1: pending debit account exists");
            let credit = self
                .account_index_of(pending.credit_account_id)
                .expect("I1: pending credit account exists");
            release_pending(self.accounts.get_mut(debit as usize), &pending, true);
            release_pending(self.accounts.get_mut(credit as usize), &pending, false);
        }
    }

    /// Puts history-list `value` (a store position, or a system resolution's) at the head of
    /// both accounts' lists; returns their previous heads.
    #[inline]
    pub(crate) fn link_history(&mut self, accounts: [u32; 2], value: u32) -> [u32; 2] {
        accounts.map(|account| {
            std::mem::replace(
                &mut self.accounts.get_mut(account as usize).transfers_newest,
                value,
            )
        })
    }

    /// The dense index of account `id` whose hash the caller already computed.
    #[inline]
    pub(crate) fn account_index_of_hashed(&self, id: u128, hash: u64) -> Option<u32> {
        let accounts = &self.accounts;
        self.account_index
            .get(hash, |i| accounts.get(i as usize).id == id)
    }

    /// The dense index of account `id`.
    #[inline]
    pub(crate) fn account_index_of(&self, id: u128) -> Option<u32> {
        let accounts = &self.accounts;
        self.account_index
            .get(hash_id(id), |i| accounts.get(i as usize).id == id)
    }

    /// The dense index of transfer `id`, if stored (a post stored as no record is not: see
    /// [`Ledger::transfer_by_id`]).
    #[inline]
    pub(crate) fn transfer_index_of(&self, id: u128) -> Option<u32> {
        let transfers = &self.transfers;
        self.transfer_index
            .get(hash_id(id), |i| transfers.get(i as usize).transfer.id == id)
    }

    fn create_account(&mut self, account: &Account, timestamp: u64) -> CreateAccountResult {
        use CreateAccountResult as R;
        if account.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if account.reserved != 0 {
            return R::ReservedField;
        }
        if account.flags.has_reserved() {
            return R::ReservedFlag;
        }
        if account.id == 0 {
            return R::IdMustNotBeZero;
        }
        if account.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        let hash = hash_id(account.id);
        let accounts = &self.accounts;
        let position = match self
            .account_index
            .find(hash, |i| accounts.get(i as usize).id == account.id)
        {
            Probe::Found(index) => {
                let user_data_32 = *self.account_user_data_32.get(index as usize);
                return account_exists(account, accounts.get(index as usize), user_data_32);
            }
            Probe::Vacant(position) => position,
        };
        if let Err(result) = create_account_validate(account) {
            return result;
        }
        let index = self.accounts.len();
        assert!(
            index <= INDEX_MAX as usize,
            "account count beyond u32 indices"
        );
        self.account_index.insert_at(position, hash, index as u32);
        self.accounts.push(AccountSlot::new(&Account {
            timestamp,
            ..*account
        }));
        self.account_user_data_32.push(account.user_data_32);
        R::Ok
    }
}

/// The rules of a new account after its id was found free.
fn create_account_validate(account: &Account) -> Result<(), CreateAccountResult> {
    use CreateAccountResult as R;
    let flags = account.flags;
    if flags.debits_must_not_exceed_credits() && flags.credits_must_not_exceed_debits() {
        return Err(R::FlagsAreMutuallyExclusive);
    }
    if account.debits_pending != 0 {
        return Err(R::DebitsPendingMustBeZero);
    }
    if account.debits_posted != 0 {
        return Err(R::DebitsPostedMustBeZero);
    }
    if account.credits_pending != 0 {
        return Err(R::CreditsPendingMustBeZero);
    }
    if account.credits_posted != 0 {
        return Err(R::CreditsPostedMustBeZero);
    }
    if account.ledger == 0 {
        return Err(R::LedgerMustNotBeZero);
    }
    if account.code == 0 {
        return Err(R::CodeMustNotBeZero);
    }
    Ok(())
}

/// Compares a resubmitted account with the stored one (`CLOSED` changes after creation, so it
/// is not compared).
fn account_exists(
    account: &Account,
    existing: &AccountSlot,
    existing_user_data_32: u32,
) -> CreateAccountResult {
    use CreateAccountResult as R;
    let flags = account.flags.difference(AccountFlags::CLOSED);
    if flags != existing.flags.difference(AccountFlags::CLOSED) {
        return R::ExistsWithDifferentFlags;
    }
    if account.user_data_128 != existing.user_data_128 {
        return R::ExistsWithDifferentUserData128;
    }
    if account.user_data_64 != existing.user_data_64 {
        return R::ExistsWithDifferentUserData64;
    }
    if account.user_data_32 != existing_user_data_32 {
        return R::ExistsWithDifferentUserData32;
    }
    if account.ledger != existing.ledger {
        return R::ExistsWithDifferentLedger;
    }
    if account.code != existing.code {
        return R::ExistsWithDifferentCode;
    }
    R::Exists
}

/// The timestamp at which a pending transfer expires, if it has a timeout (`None` also if the
/// deadline would overflow, which creation rejects).
/// The pending id a post or void names (`None` for any other event, or a zero id).
#[inline]
fn post_or_void_pending_id(transfer: &Transfer) -> Option<u128> {
    let flags = transfer.flags;
    let resolves = flags.post_pending_transfer() || flags.void_pending_transfer();
    (resolves && transfer.pending_id != 0).then_some(transfer.pending_id)
}

pub(crate) fn pending_deadline(transfer: &Transfer) -> Option<u64> {
    if transfer.timeout == 0 {
        return None;
    }
    transfer
        .timestamp
        .checked_add(u64::from(transfer.timeout) * NANOSECONDS_PER_SECOND)
}

/// Removes a pending transfer's reservation from one side and reopens the account if the
/// transfer closed it (void or expiry).
pub(crate) fn release_pending(account: &mut AccountSlot, pending: &Transfer, debit_side: bool) {
    if debit_side {
        account.debits_pending = account
            .debits_pending
            .checked_sub(pending.amount)
            .expect("I1: reservation present");
        if pending.flags.closing_debit() {
            account.flags = account.flags.difference(AccountFlags::CLOSED);
        }
    } else {
        account.credits_pending = account
            .credits_pending
            .checked_sub(pending.amount)
            .expect("I1: reservation present");
        if pending.flags.closing_credit() {
            account.flags = account.flags.difference(AccountFlags::CLOSED);
        }
    }
}
