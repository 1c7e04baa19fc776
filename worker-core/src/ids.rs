//! Transaction ids made at the edge: a UUIDv7 (time-ordered, the exact key) and a legacy integer
//! id (see `contract::legacy_id` for the scheme and its collision bound).

use crate::host::Host;

/// A UUIDv7 from the host's clock and CSPRNG, without a round trip to a central sequence.
pub(crate) fn new_uuid<H: Host>(host: &H) -> uuid::Uuid {
    let millis = u64::try_from(host.now().timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &host.random_bytes::<10>()).into_uuid()
}
