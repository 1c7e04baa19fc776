//! The limits both sides enforce. The edge never produces what the store would refuse.

/// Most features (and explanation entries) one transaction may carry: as many as a model may
/// have.
pub const MAX_FEATURES: usize = model_format::MAX_FEATURES;

/// Longest accepted name (feature name, model version, edge instance, region), in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Longest accepted analyst comment, in bytes.
pub const MAX_COMMENT_LEN: usize = 8192;

/// Largest request body the edge accepts on `/api/*`.
pub const PREDICT_MAX_BODY_BYTES: usize = 1 << 20;

/// Most transactions in one `/api/predict-batch` request. The body limit already bounds the
/// work (the smallest valid item is ~13 bytes); this keeps the answer bounded too (~7 MB with
/// explanations at this count).
pub const PREDICT_MAX_BATCH_ITEMS: usize = 10_000;

/// Most events the edge sends in one `POST /v1/events`.
pub const FORWARD_MAX_EVENTS: usize = 500;

/// Most bytes the edge sends in one `POST /v1/events` (a batch closes before it would pass
/// this; a single event is always smaller, see the test `widest_event_fits_one_batch`).
pub const FORWARD_MAX_BYTES: usize = 8 << 20;

/// The store's default body limit on `POST /v1/events`.
pub const INGEST_MAX_BODY_BYTES: usize = 16 << 20;

/// The store's default event limit on `POST /v1/events`.
pub const INGEST_MAX_EVENTS: usize = 10_000;

const _: () = assert!(FORWARD_MAX_BYTES <= INGEST_MAX_BODY_BYTES);
const _: () = assert!(FORWARD_MAX_EVENTS <= INGEST_MAX_EVENTS);

/// Largest model file the registry accepts (and the edge downloads). The edge splits it into
/// key-value values of at most 1 MiB, Spin's guaranteed value size.
pub const MODEL_MAX_BYTES: usize = 16 << 20;
