//! Little-endian field readers and writers shared by the record codecs.

/// Writes fixed-width little-endian fields into a byte buffer, front to back.
pub(crate) struct Writer<'a> {
    bytes: &'a mut [u8],
    offset: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(bytes: &'a mut [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    fn put(&mut self, field: &[u8]) {
        self.bytes[self.offset..self.offset + field.len()].copy_from_slice(field);
        self.offset += field.len();
    }

    pub(crate) fn u128(&mut self, value: u128) {
        self.put(&value.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, value: u64) {
        self.put(&value.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, value: u32) {
        self.put(&value.to_le_bytes());
    }
    pub(crate) fn u16(&mut self, value: u16) {
        self.put(&value.to_le_bytes());
    }

    /// Bytes written so far.
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }
}

/// Reads fixed-width little-endian fields from a buffer whose length the caller checked.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut field = [0; N];
        field.copy_from_slice(&self.bytes[self.offset..self.offset + N]);
        self.offset += N;
        field
    }

    pub(crate) fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take())
    }
    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }

    /// Bytes read so far.
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }
}

/// Returns `Err(Length)` unless `bytes` is exactly `expected_bytes` long.
pub(crate) fn check_length(
    what: &'static str,
    bytes: &[u8],
    expected_bytes: usize,
) -> crate::Result<()> {
    if bytes.len() == expected_bytes {
        Ok(())
    } else {
        Err(crate::CoreError::Length {
            what,
            expected_bytes,
            actual_bytes: bytes.len(),
        })
    }
}
