//! The ledger's whole state as bytes: identical histories give identical bytes (I5).
//!
//! Layout (little-endian), every part in creation order so no hash-table order leaks in:
//!
//! | offset            | size            | field                                        |
//! |------------------:|----------------:|----------------------------------------------|
//! |                 0 |               8 | magic `PXLEDGR1`                             |
//! |                 8 |               4 | version (1)                                  |
//! |                12 |               4 | reserved (0)                                 |
//! |                16 |               8 | `last_timestamp`                             |
//! |                24 |           4 × 8 | account, transfer, failed id, balance counts |
//! |                56 |       128 × `A` | accounts                                     |
//! |                   |       128 × `T` | transfers                                    |
//! |                   |         1 × `T` | transfer statuses                            |
//! |                   |        16 × `F` | burnt transfer ids (transient failures)      |
//! |                   |        80 × `B` | balance entries (72 + account + transfer index) |
//! |           end − 4 |               4 | CRC32 of everything before                   |
//!
//! Decoding checks the CRC, then that the counts match the length exactly (so allocation is
//! bounded by the input), then rebuilds the indexes while checking every reference, and finally
//! runs `check_invariants`. The history lists and the expiry queue are derived, not stored.
//!
//! System resolutions, the posts that store no record in memory (see `resolution.rs`), are
//! encoded as the records they would have stored, in timestamp order among the others (their
//! pending transfers with status `Posted`), and balance entries count transfers in that order:
//! the bytes are those of a ledger that stores every post, so the format is unchanged (still
//! version 1) and so is the digest. Decoding applies the same rule to every post it reads, so
//! a restored ledger stores exactly what the original stored.

use std::cmp::Reverse;

use crate::account::{ACCOUNT_BALANCE_SIZE_BYTES, ACCOUNT_SIZE_BYTES};
use crate::codec::{Reader, Writer};
use crate::hash::{INDEX_MAX, Probe, hash_id};
use crate::ledger::{
    AccountSlot, BalanceEntry, Ledger, NONE, Status, StoredTransfer, TransferMeta, pending_deadline,
};
use crate::resolution::{RESOLUTION_BIT, stores_no_record};
use crate::transfer::TRANSFER_SIZE_BYTES;
use crate::{Account, AccountBalance, CoreError, Result, Transfer};

const MAGIC: [u8; 8] = *b"PXLEDGR1";
const VERSION: u32 = 1;
const HEADER_SIZE_BYTES: usize = 56;
const BALANCE_ENTRY_SIZE_BYTES: usize = ACCOUNT_BALANCE_SIZE_BYTES + 8;
const CHECKSUM_SIZE_BYTES: usize = 4;

struct Counts {
    accounts: usize,
    transfers: usize,
    failed: usize,
    balances: usize,
}

impl Counts {
    fn body_size_bytes(&self) -> Option<usize> {
        let accounts = self.accounts.checked_mul(ACCOUNT_SIZE_BYTES)?;
        let transfers = self.transfers.checked_mul(TRANSFER_SIZE_BYTES + 1)?;
        let failed = self.failed.checked_mul(16)?;
        let balances = self.balances.checked_mul(BALANCE_ENTRY_SIZE_BYTES)?;
        accounts
            .checked_add(transfers)?
            .checked_add(failed)?
            .checked_add(balances)
    }
}

fn inconsistent(reason: &'static str) -> CoreError {
    CoreError::Snapshot(reason)
}

impl Ledger {
    /// Encodes the whole state; identical histories give identical bytes (I5).
    ///
    /// # Panics
    /// Never in practice: the state in memory always fits the format's sizes.
    ///
    /// # Examples
    /// ```
    /// use ledger_core::{Account, Ledger};
    /// let mut ledger = Ledger::new();
    /// ledger.create_accounts(&[Account::new(1, 700, 1)], 5);
    /// let bytes = ledger.encode_snapshot();
    /// let restored = Ledger::decode_snapshot(&bytes)?;
    /// assert_eq!(restored.encode_snapshot(), bytes);
    /// assert_eq!(restored.digest(), ledger.digest());
    /// # Ok::<(), ledger_core::CoreError>(())
    /// ```
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let counts = Counts {
            accounts: self.accounts.len(),
            transfers: self.transfers.len() + self.resolutions.len(),
            failed: self.failed_ids.len(),
            balances: self.balances.len(),
        };
        let body = counts
            .body_size_bytes()
            .expect("an in-memory ledger fits in usize bytes");
        let mut out = Vec::with_capacity(HEADER_SIZE_BYTES + body + CHECKSUM_SIZE_BYTES);
        let mut header = [0; HEADER_SIZE_BYTES];
        header[..8].copy_from_slice(&MAGIC);
        let mut writer = Writer::new(&mut header[8..]);
        writer.u32(VERSION);
        writer.u32(0);
        writer.u64(self.last_timestamp);
        for count in [
            counts.accounts,
            counts.transfers,
            counts.failed,
            counts.balances,
        ] {
            writer.u64(count as u64);
        }
        out.extend_from_slice(&header);
        for (slot, &user_data_32) in self.accounts.iter().zip(self.account_user_data_32.iter()) {
            out.extend_from_slice(&slot.account(user_data_32).encode());
        }
        for (transfer, _) in self.snapshot_transfers() {
            out.extend_from_slice(&transfer.encode());
        }
        out.extend(self.snapshot_transfers().map(|(_, status)| status as u8));
        for id in &self.failed_ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        for entry in &self.balances {
            out.extend_from_slice(&entry.balance.encode());
            out.extend_from_slice(&entry.account_index.to_le_bytes());
            let index = self.snapshot_transfer_index(entry.transfer_index);
            out.extend_from_slice(&index.to_le_bytes());
        }
        let checksum = crc32fast::hash(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        assert_eq!(out.len(), HEADER_SIZE_BYTES + body + CHECKSUM_SIZE_BYTES);
        out
    }

    /// Every transfer in snapshot order, with the status a snapshot gives it: the stored ones
    /// and the system resolutions (rebuilt) merged by timestamp.
    fn snapshot_transfers(&self) -> impl Iterator<Item = (Transfer, Status)> + '_ {
        let mut stored = self.transfers.iter().peekable();
        let mut node = 0;
        std::iter::from_fn(move || {
            let resolution = (node < self.resolutions.len()).then(|| {
                let post = self.resolutions.get(node);
                (node, post.timestamp)
            });
            match (stored.peek(), resolution) {
                (Some(next), Some((_, timestamp))) if next.transfer.timestamp < timestamp => {}
                (_, Some((index, _))) => {
                    node += 1;
                    let record = self.resolution_record(index as u32);
                    return Some((record, Status::NotPending));
                }
                (_, None) => {}
            }
            let next = stored.next()?;
            let status = match next.meta.status {
                Status::PostedByResolution => Status::Posted,
                status => status,
            };
            Some((next.transfer, status))
        })
    }

    /// The snapshot index (see [`Self::snapshot_transfers`]) of the transfer stored at
    /// `index`: plus the system resolutions before it.
    fn snapshot_transfer_index(&self, index: u32) -> u32 {
        let timestamp = self.transfers.get(index as usize).transfer.timestamp;
        let (mut low, mut high) = (0, self.resolutions.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.resolutions.get(middle).timestamp < timestamp {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        u32::try_from(index as usize + low).expect("snapshot counts fit u32 indices")
    }

    /// A 64-bit digest of the snapshot bytes: equal digests for replicas in the same state.
    ///
    /// # Panics
    /// Never in practice (see [`Self::encode_snapshot`]).
    pub fn digest(&self) -> u64 {
        let bytes = self.encode_snapshot();
        let mut state: u64 = 0x243F_6A88_85A3_08D3 ^ bytes.len() as u64;
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            let product = u128::from(state ^ u64::from_le_bytes(word)) * 0x9E37_79B9_7F4A_7C15;
            state = (product as u64) ^ ((product >> 64) as u64);
        }
        state
    }

    /// Decodes a snapshot written by [`Self::encode_snapshot`].
    ///
    /// # Errors
    /// [`CoreError::Checksum`] for damaged bytes, [`CoreError::Length`] or
    /// [`CoreError::InvalidValue`] for a malformed header, [`CoreError::Snapshot`] for
    /// inconsistent content, [`CoreError::Invariant`] for a state that breaks I1 or I7.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Self> {
        let minimum = HEADER_SIZE_BYTES + CHECKSUM_SIZE_BYTES;
        if bytes.len() < minimum {
            return Err(CoreError::Length {
                what: "snapshot",
                expected_bytes: minimum,
                actual_bytes: bytes.len(),
            });
        }
        let (content, checksum) = bytes.split_at(bytes.len() - CHECKSUM_SIZE_BYTES);
        let stored = Reader::new(checksum).u32();
        let computed = crc32fast::hash(content);
        if stored != computed {
            return Err(CoreError::Checksum { stored, computed });
        }
        let (last_timestamp, counts) = decode_snapshot_header(content)?;
        let mut ledger = Self {
            last_timestamp,
            ..Self::default()
        };
        let mut body = &content[HEADER_SIZE_BYTES..];
        let mut take = |size_bytes: usize| {
            let (part, rest) = body.split_at(size_bytes);
            body = rest;
            part
        };
        let accounts = take(counts.accounts * ACCOUNT_SIZE_BYTES);
        let transfers = take(counts.transfers * TRANSFER_SIZE_BYTES);
        let statuses = take(counts.transfers);
        let failed = take(counts.failed * 16);
        let balances = take(counts.balances * BALANCE_ENTRY_SIZE_BYTES);
        ledger.decode_snapshot_accounts(accounts, counts.accounts)?;
        let positions = ledger.decode_snapshot_transfers(transfers, statuses, counts.transfers)?;
        ledger.decode_snapshot_failed(failed, counts.failed)?;
        ledger.decode_snapshot_balances(balances, &positions)?;
        ledger.check_invariants()?;
        Ok(ledger)
    }

    fn decode_snapshot_accounts(&mut self, bytes: &[u8], count: usize) -> Result<()> {
        self.account_index.reserve(count);
        for record in bytes.chunks_exact(ACCOUNT_SIZE_BYTES) {
            let account = Account::decode(record)?;
            let invalid_id = account.id == 0 || account.id == u128::MAX;
            if invalid_id || account.flags.has_reserved() || account.reserved != 0 {
                return Err(inconsistent("invalid account id or flags"));
            }
            if account.timestamp == 0 || account.timestamp > self.last_timestamp {
                return Err(inconsistent("account timestamp out of range"));
            }
            let hash = hash_id(account.id);
            let accounts = &self.accounts;
            let Probe::Vacant(position) = self
                .account_index
                .find(hash, |i| accounts.get(i as usize).id == account.id)
            else {
                return Err(inconsistent("duplicate account id"));
            };
            self.account_index
                .insert_at(position, hash, self.accounts.len() as u32);
            self.accounts.push(AccountSlot::new(&account));
            self.account_user_data_32.push(account.user_data_32);
        }
        Ok(())
    }

    /// Decodes the transfers; returns the store position of each ([`NONE`] for a system
    /// resolution, which stores none).
    fn decode_snapshot_transfers(
        &mut self,
        bytes: &[u8],
        statuses: &[u8],
        count: usize,
    ) -> Result<Vec<u32>> {
        self.transfer_index.reserve(count);
        let mut positions = Vec::with_capacity(count);
        let mut previous_timestamp = 0;
        for (record, &status) in bytes.chunks_exact(TRANSFER_SIZE_BYTES).zip(statuses) {
            let transfer = Transfer::decode(record)?;
            let status =
                Status::from_byte(status).ok_or(inconsistent("unknown transfer status"))?;
            if transfer.flags.pending() != (status != Status::NotPending) {
                return Err(inconsistent("transfer status contradicts its flags"));
            }
            if transfer.timestamp <= previous_timestamp || transfer.timestamp > self.last_timestamp
            {
                return Err(inconsistent("transfer timestamps out of order"));
            }
            previous_timestamp = transfer.timestamp;
            positions.push(self.decode_snapshot_transfer(&transfer, status)?);
        }
        Ok(positions)
    }

    /// Decodes one transfer; returns its store position, or [`NONE`] for a system resolution.
    fn decode_snapshot_transfer(&mut self, transfer: &Transfer, status: Status) -> Result<u32> {
        if transfer.id == 0 || transfer.id == u128::MAX || transfer.flags.has_reserved() {
            return Err(inconsistent("invalid transfer id or flags"));
        }
        let flags = transfer.flags;
        let mut pending_index = None;
        if flags.post_pending_transfer() || flags.void_pending_transfer() {
            pending_index = self.transfer_index_of(transfer.pending_id);
            if !pending_index
                .is_some_and(|index| self.transfers.get(index as usize).transfer.flags.pending())
            {
                return Err(inconsistent(
                    "post or void names no earlier pending transfer",
                ));
            }
        }
        let debit = self.account_index_of(transfer.debit_account_id);
        let credit = self.account_index_of(transfer.credit_account_id);
        let (Some(debit_index), Some(credit_index)) = (debit, credit) else {
            return Err(inconsistent("transfer names an unknown account"));
        };
        if debit_index == credit_index {
            return Err(inconsistent("transfer debits and credits one account"));
        }
        let hash = hash_id(transfer.id);
        let transfers = &self.transfers;
        let Probe::Vacant(position) = self.transfer_index.find(hash, |i| {
            transfers.get(i as usize).transfer.id == transfer.id
        }) else {
            return Err(inconsistent("duplicate transfer id"));
        };
        if self.resolution_of_id(transfer.id).is_some() {
            return Err(inconsistent("duplicate transfer id"));
        }
        if let Some(pending_index) = pending_index
            && self.decode_snapshot_resolution(
                transfer,
                pending_index,
                [debit_index, credit_index],
            )?
        {
            return Ok(NONE);
        }
        if self.transfers.len() >= RESOLUTION_BIT as usize {
            return Err(inconsistent("transfer count beyond 31-bit indices"));
        }
        let index = self.transfers.len() as u32;
        self.transfer_index.insert_at(position, hash, index);
        let [debit_previous, credit_previous] =
            self.link_history([debit_index, credit_index], index);
        let meta = TransferMeta {
            debit_previous,
            credit_previous,
            resolution: NONE,
            status,
        };
        self.transfers.push(StoredTransfer {
            transfer: *transfer,
            meta,
        });
        if status == Status::Pending && transfer.timeout != 0 {
            let deadline =
                pending_deadline(transfer).ok_or(inconsistent("pending deadline overflows"))?;
            self.expiry_queue.push(Reverse((deadline, index)));
        }
        Ok(index)
    }

    /// Keeps the post `transfer` of `pending_index` as no record if it is a system resolution
    /// (the rule `create_transfers` applies; its pending transfer decoded `Posted`); whether
    /// it did.
    fn decode_snapshot_resolution(
        &mut self,
        transfer: &Transfer,
        pending_index: u32,
        accounts: [u32; 2],
    ) -> Result<bool> {
        let pending = self.transfers.get(pending_index as usize);
        let resolution = pending.meta.status == Status::Posted
            && stores_no_record(
                transfer,
                &pending.transfer,
                self.accounts.get(accounts[0] as usize),
                self.accounts.get(accounts[1] as usize),
            );
        if resolution {
            // `store_resolution` asserts this bound; a snapshot is input: a typed error.
            if self.resolutions.len() >= (RESOLUTION_BIT - 1) as usize {
                return Err(inconsistent(
                    "system resolution count beyond 31-bit indices",
                ));
            }
            self.store_resolution(pending_index, accounts, transfer.flags, transfer.timestamp);
        }
        Ok(resolution)
    }

    fn decode_snapshot_failed(&mut self, bytes: &[u8], count: usize) -> Result<()> {
        self.failed_index.reserve(count);
        for record in bytes.chunks_exact(16) {
            let id = Reader::new(record).u128();
            let hash = hash_id(id);
            let failed_ids = &self.failed_ids;
            let Probe::Vacant(position) = self
                .failed_index
                .find(hash, |i| failed_ids[i as usize] == id)
            else {
                return Err(inconsistent("duplicate burnt id"));
            };
            self.failed_index
                .insert_at(position, hash, self.failed_ids.len() as u32);
            self.failed_ids.push(id);
        }
        Ok(())
    }

    /// Decodes the balance entries; `positions` maps a snapshot's transfer index to its store
    /// position.
    fn decode_snapshot_balances(&mut self, bytes: &[u8], positions: &[u32]) -> Result<()> {
        self.balances
            .reserve_exact(bytes.len() / BALANCE_ENTRY_SIZE_BYTES);
        for record in bytes.chunks_exact(BALANCE_ENTRY_SIZE_BYTES) {
            let balance = AccountBalance::decode(&record[..ACCOUNT_BALANCE_SIZE_BYTES])?;
            let mut reader = Reader::new(&record[ACCOUNT_BALANCE_SIZE_BYTES..]);
            let account_index = reader.u32();
            let transfer_index = positions
                .get(reader.u32() as usize)
                .copied()
                .unwrap_or(NONE);
            if account_index as usize >= self.accounts.len() || transfer_index == NONE {
                return Err(inconsistent("balance entry index out of range"));
            }
            let slot = self.accounts.get(account_index as usize);
            let transfer = &self.transfers.get(transfer_index as usize).transfer;
            let party =
                transfer.debit_account_id == slot.id || transfer.credit_account_id == slot.id;
            if !slot.flags.history() || !party || transfer.timestamp != balance.timestamp {
                return Err(inconsistent(
                    "balance entry does not match its account and transfer",
                ));
            }
            let previous = slot.balances_newest;
            if previous != NONE && self.balances[previous as usize].transfer_index >= transfer_index
            {
                return Err(inconsistent("balance entries out of order"));
            }
            let entry_index = self.balances.len() as u32;
            self.accounts
                .get_mut(account_index as usize)
                .balances_newest = entry_index;
            self.balances.push(BalanceEntry {
                balance,
                account_index,
                transfer_index,
                previous,
            });
        }
        Ok(())
    }
}

/// Checks magic, version and reserved bytes, and that the counts fill the content exactly.
fn decode_snapshot_header(content: &[u8]) -> Result<(u64, Counts)> {
    if content[..8] != MAGIC {
        return Err(CoreError::InvalidValue {
            what: "snapshot magic",
            value: u64::from(content[0]),
        });
    }
    let mut reader = Reader::new(&content[8..HEADER_SIZE_BYTES]);
    let version = reader.u32();
    if version != VERSION {
        return Err(CoreError::InvalidValue {
            what: "snapshot version",
            value: version.into(),
        });
    }
    let reserved = reader.u32();
    if reserved != 0 {
        return Err(CoreError::InvalidValue {
            what: "snapshot reserved",
            value: reserved.into(),
        });
    }
    let last_timestamp = reader.u64();
    // Leave room for further batches: a clock this close to u64::MAX cannot be a real one.
    if last_timestamp > u64::MAX - (1 << 32) {
        return Err(CoreError::InvalidValue {
            what: "snapshot last timestamp",
            value: last_timestamp,
        });
    }
    let mut count = || -> Result<usize> {
        let value = reader.u64();
        if value > u64::from(INDEX_MAX) {
            return Err(CoreError::InvalidValue {
                what: "snapshot count",
                value,
            });
        }
        Ok(value as usize)
    };
    let counts = Counts {
        accounts: count()?,
        transfers: count()?,
        failed: count()?,
        balances: count()?,
    };
    let expected = counts
        .body_size_bytes()
        .and_then(|body| body.checked_add(HEADER_SIZE_BYTES));
    if expected != Some(content.len()) {
        return Err(CoreError::Length {
            what: "snapshot body",
            expected_bytes: expected.unwrap_or(usize::MAX),
            actual_bytes: content.len(),
        });
    }
    Ok((last_timestamp, counts))
}
