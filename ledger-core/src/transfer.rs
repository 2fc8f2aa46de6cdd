//! [`Transfer`]: a 128-byte little-endian record.

use crate::codec::{Reader, Writer, check_length};
use crate::{Result, TransferFlags};

/// A double-entry transfer of `amount` from `debit_account_id` to `credit_account_id`.
///
/// Encoded as 128 bytes, little-endian, fields in declaration order:
///
/// | offset | size | field             |
/// |-------:|-----:|-------------------|
/// |      0 |   16 | id                |
/// |     16 |   16 | `debit_account_id`  |
/// |     32 |   16 | `credit_account_id` |
/// |     48 |   16 | amount            |
/// |     64 |   16 | `pending_id`        |
/// |     80 |   16 | `user_data_128`     |
/// |     96 |    8 | `user_data_64`      |
/// |    104 |    4 | `user_data_32`      |
/// |    108 |    4 | timeout           |
/// |    112 |    4 | ledger            |
/// |    116 |    2 | code              |
/// |    118 |    2 | flags             |
/// |    120 |    8 | timestamp         |
///
/// A stored transfer holds what happened: a balancing transfer its effective amount, a post or
/// void the accounts, ledger, code and amount it resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Transfer {
    /// Unique forever; 0 and `u128::MAX` are invalid.
    pub id: u128,
    /// The account debited.
    pub debit_account_id: u128,
    /// The account credited.
    pub credit_account_id: u128,
    /// The amount; for a post, `u128::MAX` means the full pending amount; for a balancing
    /// transfer, the upper bound.
    pub amount: u128,
    /// For a post or void: the pending transfer it resolves; otherwise zero.
    pub pending_id: u128,
    /// Opaque user data.
    pub user_data_128: u128,
    /// Opaque user data.
    pub user_data_64: u64,
    /// Opaque user data.
    pub user_data_32: u32,
    /// For a pending transfer: seconds after its timestamp at which it expires (0 = never).
    pub timeout: u32,
    /// The asset; must equal both accounts' ledger.
    pub ledger: u32,
    /// The reason for the transfer (user-defined, non-zero).
    pub code: u16,
    /// See [`TransferFlags`].
    pub flags: TransferFlags,
    /// Assigned by the ledger from the log (nanoseconds); must be zero on creation.
    pub timestamp: u64,
}

/// Size of an encoded [`Transfer`].
pub const TRANSFER_SIZE_BYTES: usize = 128;
const _: () = assert!(size_of::<Transfer>() == TRANSFER_SIZE_BYTES);

impl Transfer {
    /// A new single-phase transfer with no flags, timeout or user data.
    ///
    /// # Examples
    /// ```
    /// use ledger_core::{Transfer, TransferFlags};
    /// let transfer = Transfer {
    ///     flags: TransferFlags::PENDING,
    ///     timeout: 30,
    ///     ..Transfer::new(9, 1, 2, 100, 700, 1)
    /// };
    /// assert_eq!(Transfer::decode(&transfer.encode())?, transfer);
    /// # Ok::<(), ledger_core::CoreError>(())
    /// ```
    pub fn new(
        id: u128,
        debit_account_id: u128,
        credit_account_id: u128,
        amount: u128,
        ledger: u32,
        code: u16,
    ) -> Self {
        Self {
            id,
            debit_account_id,
            credit_account_id,
            amount,
            ledger,
            code,
            ..Self::default()
        }
    }

    /// The 128-byte little-endian encoding.
    pub fn encode(&self) -> [u8; TRANSFER_SIZE_BYTES] {
        let mut bytes = [0; TRANSFER_SIZE_BYTES];
        let mut writer = Writer::new(&mut bytes);
        writer.u128(self.id);
        writer.u128(self.debit_account_id);
        writer.u128(self.credit_account_id);
        writer.u128(self.amount);
        writer.u128(self.pending_id);
        writer.u128(self.user_data_128);
        writer.u64(self.user_data_64);
        writer.u32(self.user_data_32);
        writer.u32(self.timeout);
        writer.u32(self.ledger);
        writer.u16(self.code);
        writer.u16(self.flags.bits());
        writer.u64(self.timestamp);
        debug_assert_eq!(writer.offset(), TRANSFER_SIZE_BYTES);
        bytes
    }

    /// Decodes exactly 128 bytes. Every bit pattern is a representable transfer: invalid
    /// contents are rejected by the ledger with a result code.
    ///
    /// # Errors
    /// [`crate::CoreError::Length`] unless `bytes` is 128 bytes long.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        check_length("transfer", bytes, TRANSFER_SIZE_BYTES)?;
        let mut reader = Reader::new(bytes);
        let transfer = Self {
            id: reader.u128(),
            debit_account_id: reader.u128(),
            credit_account_id: reader.u128(),
            amount: reader.u128(),
            pending_id: reader.u128(),
            user_data_128: reader.u128(),
            user_data_64: reader.u64(),
            user_data_32: reader.u32(),
            timeout: reader.u32(),
            ledger: reader.u32(),
            code: reader.u16(),
            flags: TransferFlags::from_bits_retain(reader.u16()),
            timestamp: reader.u64(),
        };
        debug_assert_eq!(reader.offset(), TRANSFER_SIZE_BYTES);
        Ok(transfer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_is_little_endian_at_documented_offsets() {
        let transfer = Transfer {
            pending_id: 8,
            timeout: 9,
            flags: TransferFlags::PENDING | TransferFlags::LINKED,
            timestamp: 10,
            ..Transfer::new(1, 2, 3, 4, 5, 6)
        };
        let bytes = transfer.encode();
        for (offset, value) in [
            (0, 1),
            (16, 2),
            (32, 3),
            (48, 4),
            (64, 8),
            (108, 9),
            (112, 5),
        ] {
            assert_eq!(bytes[offset], value, "offset {offset}");
        }
        assert_eq!(bytes[116], 6);
        assert_eq!(bytes[118], 0b11);
        assert_eq!(bytes[120], 10);
        assert_eq!(Transfer::decode(&bytes), Ok(transfer));
    }

    #[test]
    fn decode_rejects_wrong_lengths() {
        assert!(Transfer::decode(&[]).is_err());
        assert!(Transfer::decode(&[0; 256]).is_err());
    }
}
