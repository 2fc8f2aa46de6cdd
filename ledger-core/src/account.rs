//! [`Account`]: a 128-byte little-endian record, and [`AccountBalance`], one entry of an
//! account's balance history.

use crate::codec::{Reader, Writer, check_length};
use crate::{AccountFlags, Result};

/// An account: balances of one asset (`ledger`) for one owner. Balances are derived
/// (credits − debits) and never stored twice. The ledger assigns `timestamp`; a new account
/// must carry zero balances and timestamp.
///
/// Encoded as 128 bytes, little-endian, fields in declaration order:
///
/// | offset | size | field           |
/// |-------:|-----:|-----------------|
/// |      0 |   16 | id              |
/// |     16 |   16 | `debits_pending`  |
/// |     32 |   16 | `debits_posted`   |
/// |     48 |   16 | `credits_pending` |
/// |     64 |   16 | `credits_posted`  |
/// |     80 |   16 | `user_data_128`   |
/// |     96 |    8 | `user_data_64`    |
/// |    104 |    4 | `user_data_32`    |
/// |    108 |    4 | reserved        |
/// |    112 |    4 | ledger          |
/// |    116 |    2 | code            |
/// |    118 |    2 | flags           |
/// |    120 |    8 | timestamp       |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Account {
    /// Unique forever; 0 and `u128::MAX` are invalid.
    pub id: u128,
    /// Sum of pending (reserved) debits.
    pub debits_pending: u128,
    /// Sum of posted debits.
    pub debits_posted: u128,
    /// Sum of pending (reserved) credits.
    pub credits_pending: u128,
    /// Sum of posted credits.
    pub credits_posted: u128,
    /// Opaque user data, e.g. a foreign key.
    pub user_data_128: u128,
    /// Opaque user data.
    pub user_data_64: u64,
    /// Opaque user data.
    pub user_data_32: u32,
    /// Must be zero.
    pub reserved: u32,
    /// The asset or currency; transfers only move value between accounts of one ledger.
    pub ledger: u32,
    /// The kind of account (user-defined, non-zero).
    pub code: u16,
    /// See [`AccountFlags`].
    pub flags: AccountFlags,
    /// Assigned by the ledger from the log (nanoseconds); must be zero on creation.
    pub timestamp: u64,
}

/// Size of an encoded [`Account`].
pub const ACCOUNT_SIZE_BYTES: usize = 128;
const _: () = assert!(size_of::<Account>() == ACCOUNT_SIZE_BYTES);

impl Account {
    /// A new account with zero balances, no flags and no user data.
    ///
    /// # Examples
    /// ```
    /// use ledger_core::{Account, AccountFlags};
    /// let account = Account {
    ///     flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
    ///     ..Account::new(1, 700, 10)
    /// };
    /// assert_eq!(Account::decode(&account.encode())?, account);
    /// # Ok::<(), ledger_core::CoreError>(())
    /// ```
    pub fn new(id: u128, ledger: u32, code: u16) -> Self {
        Self {
            id,
            ledger,
            code,
            ..Self::default()
        }
    }

    /// The 128-byte little-endian encoding.
    pub fn encode(&self) -> [u8; ACCOUNT_SIZE_BYTES] {
        let mut bytes = [0; ACCOUNT_SIZE_BYTES];
        let mut writer = Writer::new(&mut bytes);
        writer.u128(self.id);
        writer.u128(self.debits_pending);
        writer.u128(self.debits_posted);
        writer.u128(self.credits_pending);
        writer.u128(self.credits_posted);
        writer.u128(self.user_data_128);
        writer.u64(self.user_data_64);
        writer.u32(self.user_data_32);
        writer.u32(self.reserved);
        writer.u32(self.ledger);
        writer.u16(self.code);
        writer.u16(self.flags.bits());
        writer.u64(self.timestamp);
        debug_assert_eq!(writer.offset(), ACCOUNT_SIZE_BYTES);
        bytes
    }

    /// Decodes exactly 128 bytes. Every bit pattern is a representable account: invalid
    /// contents (reserved flags, zero id, ...) are rejected by the ledger with a result code.
    ///
    /// # Errors
    /// [`crate::CoreError::Length`] unless `bytes` is 128 bytes long.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        check_length("account", bytes, ACCOUNT_SIZE_BYTES)?;
        let mut reader = Reader::new(bytes);
        let account = Self {
            id: reader.u128(),
            debits_pending: reader.u128(),
            debits_posted: reader.u128(),
            credits_pending: reader.u128(),
            credits_posted: reader.u128(),
            user_data_128: reader.u128(),
            user_data_64: reader.u64(),
            user_data_32: reader.u32(),
            reserved: reader.u32(),
            ledger: reader.u32(),
            code: reader.u16(),
            flags: AccountFlags::from_bits_retain(reader.u16()),
            timestamp: reader.u64(),
        };
        debug_assert_eq!(reader.offset(), ACCOUNT_SIZE_BYTES);
        Ok(account)
    }

    /// `credits_posted` − `debits_posted` as a signed value, saturating at the i128 range.
    pub fn balance_posted(&self) -> i128 {
        signed_difference(self.credits_posted, self.debits_posted)
    }
}

/// `a - b` as i128, saturating (u128 amounts can exceed the i128 range).
fn signed_difference(a: u128, b: u128) -> i128 {
    if a >= b {
        i128::try_from(a - b).unwrap_or(i128::MAX)
    } else {
        i128::try_from(b - a).map_or(i128::MIN, |difference| -difference)
    }
}

/// An account's balances right after one transfer touched it (kept for `HISTORY` accounts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccountBalance {
    /// `debits_pending` after the transfer.
    pub debits_pending: u128,
    /// `debits_posted` after the transfer.
    pub debits_posted: u128,
    /// `credits_pending` after the transfer.
    pub credits_pending: u128,
    /// `credits_posted` after the transfer.
    pub credits_posted: u128,
    /// The transfer's timestamp.
    pub timestamp: u64,
}

/// Size of an encoded [`AccountBalance`].
pub const ACCOUNT_BALANCE_SIZE_BYTES: usize = 72;

impl AccountBalance {
    /// The 72-byte little-endian encoding (the four balances, then the timestamp).
    pub fn encode(&self) -> [u8; ACCOUNT_BALANCE_SIZE_BYTES] {
        let mut bytes = [0; ACCOUNT_BALANCE_SIZE_BYTES];
        let mut writer = Writer::new(&mut bytes);
        writer.u128(self.debits_pending);
        writer.u128(self.debits_posted);
        writer.u128(self.credits_pending);
        writer.u128(self.credits_posted);
        writer.u64(self.timestamp);
        debug_assert_eq!(writer.offset(), ACCOUNT_BALANCE_SIZE_BYTES);
        bytes
    }

    /// Decodes exactly 72 bytes.
    ///
    /// # Errors
    /// [`crate::CoreError::Length`] unless `bytes` is 72 bytes long.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        check_length("account balance", bytes, ACCOUNT_BALANCE_SIZE_BYTES)?;
        let mut reader = Reader::new(bytes);
        Ok(Self {
            debits_pending: reader.u128(),
            debits_posted: reader.u128(),
            credits_pending: reader.u128(),
            credits_posted: reader.u128(),
            timestamp: reader.u64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_is_little_endian_at_documented_offsets() {
        let account = Account {
            id: 0x0102,
            debits_posted: 3,
            user_data_64: 4,
            ledger: 5,
            code: 6,
            flags: AccountFlags::HISTORY,
            timestamp: 7,
            ..Account::default()
        };
        let bytes = account.encode();
        assert_eq!(&bytes[0..2], &[0x02, 0x01]);
        assert_eq!(bytes[32], 3);
        assert_eq!(bytes[96], 4);
        assert_eq!(bytes[112], 5);
        assert_eq!(bytes[116], 6);
        assert_eq!(bytes[118], 1 << 3);
        assert_eq!(bytes[120], 7);
        assert_eq!(Account::decode(&bytes), Ok(account));
    }

    #[test]
    fn decode_rejects_wrong_lengths() {
        assert!(Account::decode(&[0; 127]).is_err());
        assert!(Account::decode(&[0; 129]).is_err());
        assert!(AccountBalance::decode(&[0; 71]).is_err());
    }

    #[test]
    fn balance_saturates() {
        let account = Account {
            credits_posted: u128::MAX,
            ..Account::default()
        };
        assert_eq!(account.balance_posted(), i128::MAX);
        let account = Account {
            debits_posted: u128::MAX,
            ..Account::default()
        };
        assert_eq!(account.balance_posted(), i128::MIN);
        let account = Account {
            debits_posted: 5,
            credits_posted: 2,
            ..Account::default()
        };
        assert_eq!(account.balance_posted(), -3);
    }
}
