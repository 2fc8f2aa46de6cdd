//! Invariant I9, linearizable reads: a read returns a state that includes every write
//! acknowledged before the read began. The simulator's state machine answers a read with one
//! past the slot of the last command it applied.

/// Checks one read reply.
///
/// # Errors
///
/// A description of the violation.
pub fn check_read(
    request_id: u64,
    reply: &[u8],
    acknowledged_slot_end_at_start: u64,
) -> Result<(), String> {
    let Ok(bytes) = <[u8; 8]>::try_from(reply) else {
        return Err(format!("read {request_id}: malformed reply {reply:?}"));
    };
    let command_slot_end = u64::from_le_bytes(bytes);
    if command_slot_end < acknowledged_slot_end_at_start {
        return Err(format!(
            "I9: read {request_id} saw commands below slot {command_slot_end}, but a write at \
             slot {} was acknowledged before it began",
            acknowledged_slot_end_at_start - 1
        ));
    }
    Ok(())
}
