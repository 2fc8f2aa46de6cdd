//! What a Paxos entry carries for the ledger ([`Command`] → [`Reply`]) and what a linearizable
//! read asks ([`Query`] → [`QueryReply`]), with checked codecs.
//!
//! Every message is an 8-byte header — `kind: u8`, three zero bytes, `count: u32` (LE) — then
//! `count` fixed-size items. A decoder checks the kind, the zero bytes, `count` against
//! [`BATCH_EVENTS_MAX`] and the exact length before it allocates, so hostile bytes cost at most
//! their own length in memory.

use crate::account::{ACCOUNT_BALANCE_SIZE_BYTES, ACCOUNT_SIZE_BYTES};
use crate::codec::{Reader, Writer, check_length};
use crate::transfer::TRANSFER_SIZE_BYTES;
use crate::{
    Account, AccountBalance, AccountFilterFlags, CoreError, CreateAccountResult,
    CreateTransferResult, Result, Transfer,
};

/// The most events (or ids, or results) one message may carry.
pub const BATCH_EVENTS_MAX: u32 = 8190;

const HEADER_SIZE_BYTES: usize = 8;

const KIND_CREATE_ACCOUNTS: u8 = 1;
const KIND_CREATE_TRANSFERS: u8 = 2;
const KIND_LOOKUP_ACCOUNTS: u8 = 3;
const KIND_LOOKUP_TRANSFERS: u8 = 4;
const KIND_GET_ACCOUNT_TRANSFERS: u8 = 5;
const KIND_GET_ACCOUNT_BALANCES: u8 = 6;
const KIND_BALANCES: u8 = 7;

/// A write the ledger applies: one batch of events.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Create these accounts, in order.
    CreateAccounts(Vec<Account>),
    /// Create these transfers, in order.
    CreateTransfers(Vec<Transfer>),
}

/// The per-event results of a [`Command`], one per event in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// Results of [`Command::CreateAccounts`].
    CreateAccounts(Vec<CreateAccountResult>),
    /// Results of [`Command::CreateTransfers`].
    CreateTransfers(Vec<CreateTransferResult>),
}

/// A read of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Query {
    /// The accounts with these ids (found ones, in request order).
    LookupAccounts(Vec<u128>),
    /// The transfers with these ids (found ones, in request order).
    LookupTransfers(Vec<u128>),
    /// Transfers of one account.
    GetAccountTransfers(AccountFilter),
    /// Balance history of one `HISTORY` account.
    GetAccountBalances(AccountFilter),
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryReply {
    /// Answer to [`Query::LookupAccounts`].
    Accounts(Vec<Account>),
    /// Answer to [`Query::LookupTransfers`] and [`Query::GetAccountTransfers`].
    Transfers(Vec<Transfer>),
    /// Answer to [`Query::GetAccountBalances`].
    Balances(Vec<AccountBalance>),
}

/// Selects transfers (or balances) of one account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccountFilter {
    /// The account.
    pub account_id: u128,
    /// Only transfers with `timestamp >= timestamp_min` (0: no lower bound).
    pub timestamp_min: u64,
    /// Only transfers with `timestamp <= timestamp_max` (0: no upper bound).
    pub timestamp_max: u64,
    /// At most this many results (capped at [`BATCH_EVENTS_MAX`]; 0 gives none).
    pub limit: u32,
    /// Which side(s) and which order; neither `DEBITS` nor `CREDITS` gives none.
    pub flags: AccountFilterFlags,
}

/// Size of an encoded [`AccountFilter`].
pub const ACCOUNT_FILTER_SIZE_BYTES: usize = 40;

impl AccountFilter {
    /// A filter over both sides of `account_id`, oldest first, up to `limit` results.
    pub fn new(account_id: u128, limit: u32) -> Self {
        Self {
            account_id,
            limit,
            flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
            ..Self::default()
        }
    }

    /// The 40-byte little-endian encoding (fields in declaration order, then 2 zero bytes).
    pub fn encode(&self) -> [u8; ACCOUNT_FILTER_SIZE_BYTES] {
        let mut bytes = [0; ACCOUNT_FILTER_SIZE_BYTES];
        let mut writer = Writer::new(&mut bytes);
        writer.u128(self.account_id);
        writer.u64(self.timestamp_min);
        writer.u64(self.timestamp_max);
        writer.u32(self.limit);
        writer.u16(self.flags.bits());
        writer.u16(0);
        bytes
    }

    /// Decodes exactly 40 bytes.
    ///
    /// # Errors
    /// [`CoreError::Length`] for another length, [`CoreError::InvalidValue`] for non-zero
    /// padding.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        check_length("account filter", bytes, ACCOUNT_FILTER_SIZE_BYTES)?;
        let mut reader = Reader::new(bytes);
        let filter = Self {
            account_id: reader.u128(),
            timestamp_min: reader.u64(),
            timestamp_max: reader.u64(),
            limit: reader.u32(),
            flags: AccountFilterFlags::from_bits_retain(reader.u16()),
        };
        let padding = reader.u16();
        if padding != 0 {
            return Err(CoreError::InvalidValue {
                what: "account filter padding",
                value: padding.into(),
            });
        }
        Ok(filter)
    }
}

fn encode_header(out: &mut Vec<u8>, kind: u8, count: usize) {
    assert!(
        count <= BATCH_EVENTS_MAX as usize,
        "message of {count} items"
    );
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&(count as u32).to_le_bytes());
}

/// Splits a message into its kind and body, checking padding, count and exact length.
fn decode_header<'a>(
    what: &'static str,
    bytes: &'a [u8],
    item_size_bytes: usize,
) -> Result<(u8, &'a [u8])> {
    if bytes.len() < HEADER_SIZE_BYTES {
        return Err(CoreError::Length {
            what,
            expected_bytes: HEADER_SIZE_BYTES,
            actual_bytes: bytes.len(),
        });
    }
    let (header, body) = bytes.split_at(HEADER_SIZE_BYTES);
    if header[1..4] != [0, 0, 0] {
        return Err(CoreError::InvalidValue {
            what: "header padding",
            value: header[1].into(),
        });
    }
    let count = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if count > BATCH_EVENTS_MAX {
        return Err(CoreError::BatchTooLarge {
            event_count: count.into(),
            event_count_max: BATCH_EVENTS_MAX,
        });
    }
    check_length(
        what,
        bytes,
        HEADER_SIZE_BYTES + count as usize * item_size_bytes,
    )?;
    Ok((header[0], body))
}

fn kind_of(bytes: &[u8]) -> u8 {
    bytes.first().copied().unwrap_or(0)
}

fn invalid_kind(kind: u8) -> CoreError {
    CoreError::InvalidValue {
        what: "message kind",
        value: kind.into(),
    }
}

/// Decodes `body` as fixed-size items (its length was checked by `decode_header`).
fn decode_items<T>(
    body: &[u8],
    size_bytes: usize,
    decode: impl Fn(&[u8]) -> Result<T>,
) -> Result<Vec<T>> {
    // Sized up front: collecting through `Result` cannot know the count, and a reply of
    // thousands of items would grow by copying.
    let mut items = Vec::with_capacity(body.len() / size_bytes);
    for item in body.chunks_exact(size_bytes) {
        items.push(decode(item)?);
    }
    Ok(items)
}

fn decode_u128(bytes: &[u8]) -> Result<u128> {
    check_length("id", bytes, 16)?;
    Ok(Reader::new(bytes).u128())
}

impl Command {
    /// Number of events.
    pub fn event_count(&self) -> usize {
        match self {
            Self::CreateAccounts(accounts) => accounts.len(),
            Self::CreateTransfers(transfers) => transfers.len(),
        }
    }

    /// Appends the encoding to `out`.
    ///
    /// # Panics
    /// If the batch holds more than [`BATCH_EVENTS_MAX`] events (a caller bug).
    ///
    /// # Examples
    /// ```
    /// use ledger_core::{Command, Transfer};
    /// let command = Command::CreateTransfers(vec![Transfer::new(1, 2, 3, 10, 700, 1)]);
    /// let mut bytes = Vec::new();
    /// command.encode(&mut bytes);
    /// assert_eq!(Command::decode(&bytes)?, command);
    /// # Ok::<(), ledger_core::CoreError>(())
    /// ```
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::CreateAccounts(accounts) => {
                encode_header(out, KIND_CREATE_ACCOUNTS, accounts.len());
                out.reserve(accounts.len() * ACCOUNT_SIZE_BYTES);
                for account in accounts {
                    out.extend_from_slice(&account.encode());
                }
            }
            Self::CreateTransfers(transfers) => {
                encode_header(out, KIND_CREATE_TRANSFERS, transfers.len());
                out.reserve(transfers.len() * TRANSFER_SIZE_BYTES);
                for transfer in transfers {
                    out.extend_from_slice(&transfer.encode());
                }
            }
        }
    }

    /// Decodes a command.
    ///
    /// # Errors
    /// A [`CoreError`] for an unknown kind, a bad header, too many events or a wrong length.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match kind_of(bytes) {
            KIND_CREATE_ACCOUNTS => {
                let (_, body) = decode_header("create_accounts", bytes, ACCOUNT_SIZE_BYTES)?;
                Ok(Self::CreateAccounts(decode_items(
                    body,
                    ACCOUNT_SIZE_BYTES,
                    Account::decode,
                )?))
            }
            KIND_CREATE_TRANSFERS => {
                let (_, body) = decode_header("create_transfers", bytes, TRANSFER_SIZE_BYTES)?;
                Ok(Self::CreateTransfers(decode_items(
                    body,
                    TRANSFER_SIZE_BYTES,
                    Transfer::decode,
                )?))
            }
            kind => Err(invalid_kind(kind)),
        }
    }
}

impl Reply {
    /// Appends the encoding (one u32 code per event) to `out`.
    ///
    /// # Panics
    /// If the reply holds more than [`BATCH_EVENTS_MAX`] results (a caller bug).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::CreateAccounts(results) => {
                encode_header(out, KIND_CREATE_ACCOUNTS, results.len());
                for result in results {
                    out.extend_from_slice(&result.code().to_le_bytes());
                }
            }
            Self::CreateTransfers(results) => {
                encode_header(out, KIND_CREATE_TRANSFERS, results.len());
                for result in results {
                    out.extend_from_slice(&result.code().to_le_bytes());
                }
            }
        }
    }

    /// Decodes a reply.
    ///
    /// # Errors
    /// A [`CoreError`] for an unknown kind or result code, a bad header or a wrong length.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let code = |item: &[u8]| -> Result<u32> {
            check_length("result", item, 4)?;
            Ok(Reader::new(item).u32())
        };
        let invalid = |code: u32| CoreError::InvalidValue {
            what: "result code",
            value: code.into(),
        };
        match kind_of(bytes) {
            KIND_CREATE_ACCOUNTS => {
                let (_, body) = decode_header("create_accounts reply", bytes, 4)?;
                let results = decode_items(body, 4, |item| {
                    let code = code(item)?;
                    CreateAccountResult::from_code(code).ok_or_else(|| invalid(code))
                })?;
                Ok(Self::CreateAccounts(results))
            }
            KIND_CREATE_TRANSFERS => {
                let (_, body) = decode_header("create_transfers reply", bytes, 4)?;
                let results = decode_items(body, 4, |item| {
                    let code = code(item)?;
                    CreateTransferResult::from_code(code).ok_or_else(|| invalid(code))
                })?;
                Ok(Self::CreateTransfers(results))
            }
            kind => Err(invalid_kind(kind)),
        }
    }
}

impl Query {
    /// Appends the encoding to `out`.
    ///
    /// # Panics
    /// If a lookup holds more than [`BATCH_EVENTS_MAX`] ids (a caller bug).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::LookupAccounts(ids) | Self::LookupTransfers(ids) => {
                let kind = if matches!(self, Self::LookupAccounts(_)) {
                    KIND_LOOKUP_ACCOUNTS
                } else {
                    KIND_LOOKUP_TRANSFERS
                };
                encode_header(out, kind, ids.len());
                for id in ids {
                    out.extend_from_slice(&id.to_le_bytes());
                }
            }
            Self::GetAccountTransfers(filter) => {
                encode_header(out, KIND_GET_ACCOUNT_TRANSFERS, 1);
                out.extend_from_slice(&filter.encode());
            }
            Self::GetAccountBalances(filter) => {
                encode_header(out, KIND_GET_ACCOUNT_BALANCES, 1);
                out.extend_from_slice(&filter.encode());
            }
        }
    }

    /// Decodes a query.
    ///
    /// # Errors
    /// A [`CoreError`] for an unknown kind, a bad header, too many ids or a wrong length.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match kind_of(bytes) {
            kind @ (KIND_LOOKUP_ACCOUNTS | KIND_LOOKUP_TRANSFERS) => {
                let (_, body) = decode_header("lookup", bytes, 16)?;
                let ids = decode_items(body, 16, decode_u128)?;
                Ok(if kind == KIND_LOOKUP_ACCOUNTS {
                    Self::LookupAccounts(ids)
                } else {
                    Self::LookupTransfers(ids)
                })
            }
            kind @ (KIND_GET_ACCOUNT_TRANSFERS | KIND_GET_ACCOUNT_BALANCES) => {
                let (_, body) =
                    decode_header("account filter query", bytes, ACCOUNT_FILTER_SIZE_BYTES)?;
                if body.is_empty() {
                    return Err(CoreError::Length {
                        what: "account filter query",
                        expected_bytes: HEADER_SIZE_BYTES + ACCOUNT_FILTER_SIZE_BYTES,
                        actual_bytes: bytes.len(),
                    });
                }
                let filter = AccountFilter::decode(body)?;
                Ok(if kind == KIND_GET_ACCOUNT_TRANSFERS {
                    Self::GetAccountTransfers(filter)
                } else {
                    Self::GetAccountBalances(filter)
                })
            }
            kind => Err(invalid_kind(kind)),
        }
    }
}

impl QueryReply {
    /// Appends the encoding to `out`.
    ///
    /// # Panics
    /// If the reply holds more than [`BATCH_EVENTS_MAX`] items (the ledger caps its answers).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Accounts(accounts) => {
                encode_header(out, KIND_CREATE_ACCOUNTS, accounts.len());
                for account in accounts {
                    out.extend_from_slice(&account.encode());
                }
            }
            Self::Transfers(transfers) => {
                encode_header(out, KIND_CREATE_TRANSFERS, transfers.len());
                for transfer in transfers {
                    out.extend_from_slice(&transfer.encode());
                }
            }
            Self::Balances(balances) => {
                encode_header(out, KIND_BALANCES, balances.len());
                for balance in balances {
                    out.extend_from_slice(&balance.encode());
                }
            }
        }
    }

    /// Decodes a query reply.
    ///
    /// # Errors
    /// A [`CoreError`] for an unknown kind, a bad header, too many items or a wrong length.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match kind_of(bytes) {
            KIND_CREATE_ACCOUNTS => {
                let (_, body) = decode_header("accounts", bytes, ACCOUNT_SIZE_BYTES)?;
                Ok(Self::Accounts(decode_items(
                    body,
                    ACCOUNT_SIZE_BYTES,
                    Account::decode,
                )?))
            }
            KIND_CREATE_TRANSFERS => {
                let (_, body) = decode_header("transfers", bytes, TRANSFER_SIZE_BYTES)?;
                Ok(Self::Transfers(decode_items(
                    body,
                    TRANSFER_SIZE_BYTES,
                    Transfer::decode,
                )?))
            }
            KIND_BALANCES => {
                let (_, body) = decode_header("balances", bytes, ACCOUNT_BALANCE_SIZE_BYTES)?;
                let balances =
                    decode_items(body, ACCOUNT_BALANCE_SIZE_BYTES, AccountBalance::decode)?;
                Ok(Self::Balances(balances))
            }
            kind => Err(invalid_kind(kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransferFlags;

    fn round_trip_command(command: &Command) {
        let mut bytes = Vec::new();
        command.encode(&mut bytes);
        assert_eq!(&Command::decode(&bytes).unwrap(), command);
        for cut in 0..bytes.len() {
            assert!(
                Command::decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
    }

    #[test]
    fn commands_round_trip_and_prefixes_fail() {
        round_trip_command(&Command::CreateAccounts(vec![
            Account::new(1, 2, 3),
            Account::new(4, 5, 6),
        ]));
        let transfer = Transfer {
            flags: TransferFlags::PENDING,
            ..Transfer::new(1, 2, 3, 4, 5, 6)
        };
        round_trip_command(&Command::CreateTransfers(vec![transfer; 3]));
        round_trip_command(&Command::CreateTransfers(Vec::new()));
    }

    #[test]
    fn replies_queries_and_answers_round_trip() {
        let reply = Reply::CreateTransfers(CreateTransferResult::ALL.to_vec());
        let mut bytes = Vec::new();
        reply.encode(&mut bytes);
        assert_eq!(Reply::decode(&bytes).unwrap(), reply);
        let reply = Reply::CreateAccounts(CreateAccountResult::ALL.to_vec());
        bytes.clear();
        reply.encode(&mut bytes);
        assert_eq!(Reply::decode(&bytes).unwrap(), reply);

        let filter = AccountFilter {
            timestamp_min: 3,
            flags: AccountFilterFlags::REVERSED,
            ..AccountFilter::new(9, 10)
        };
        for query in [
            Query::LookupAccounts(vec![1, u128::MAX]),
            Query::LookupTransfers(vec![]),
            Query::GetAccountTransfers(filter),
            Query::GetAccountBalances(filter),
        ] {
            bytes.clear();
            query.encode(&mut bytes);
            assert_eq!(Query::decode(&bytes).unwrap(), query);
        }
        for answer in [
            QueryReply::Accounts(vec![Account::new(1, 2, 3)]),
            QueryReply::Transfers(vec![Transfer::new(1, 2, 3, 4, 5, 6)]),
            QueryReply::Balances(vec![AccountBalance {
                debits_posted: 5,
                timestamp: 9,
                ..AccountBalance::default()
            }]),
        ] {
            bytes.clear();
            answer.encode(&mut bytes);
            assert_eq!(QueryReply::decode(&bytes).unwrap(), answer);
        }
    }

    #[test]
    fn hostile_headers_are_rejected_before_allocating() {
        // Count u32::MAX with no body: rejected on the count, not by allocating 512 GiB.
        let bytes = [KIND_CREATE_TRANSFERS, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(
            Command::decode(&bytes),
            Err(CoreError::BatchTooLarge { .. })
        ));
        let bytes = [KIND_CREATE_TRANSFERS, 1, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            Command::decode(&bytes),
            Err(CoreError::InvalidValue { .. })
        ));
        let bytes = [9, 0, 0, 0, 0, 0, 0, 0];
        assert!(Command::decode(&bytes).is_err());
        let mut bytes = Vec::new();
        Reply::CreateTransfers(vec![CreateTransferResult::Ok]).encode(&mut bytes);
        bytes[8] = 200;
        assert!(Reply::decode(&bytes).is_err());
        // A filter query must carry exactly one filter.
        let bytes = [KIND_GET_ACCOUNT_TRANSFERS, 0, 0, 0, 0, 0, 0, 0];
        assert!(Query::decode(&bytes).is_err());
    }
}
