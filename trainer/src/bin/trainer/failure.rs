//! Why the trainer failed, and the exit code each kind maps to (stable, for schedulers and
//! scripts; see `docs/trainer.md`).

/// A failed command. The kind decides the exit code; the error says what happened.
pub enum Failure {
    /// Bad flags or feature spec; a request the model registry refused (4xx): exit 2.
    Usage(anyhow::Error),
    /// Inputs missing, unreadable or invalid; model file corrupt: exit 3.
    Data(anyhow::Error),
    /// The quality gate refused to publish: exit 4 (a handled outcome, not a crash).
    GateRefused(anyhow::Error),
    /// Anything else: writing outputs failed, the model registry unreachable or failing (5xx),
    /// or a bug: exit 1.
    Internal(anyhow::Error),
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Internal(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Data(_) => 3,
            Failure::GateRefused(_) => 4,
        }
    }

    /// What went wrong.
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Usage(e)
            | Failure::Data(e)
            | Failure::GateRefused(e)
            | Failure::Internal(e) => e,
        }
    }
}

/// A fitting error classified by its type: parameters that cannot work are the caller's, data
/// that cannot be fitted (no rows, no features, too many rows) is a data error, an invalid
/// fitted model is a bug.
impl From<trainer::FitError> for Failure {
    fn from(e: trainer::FitError) -> Self {
        use trainer::forest::ParamError;
        match e {
            trainer::FitError::Params(
                ParamError::NoRows | ParamError::NoFeatures | ParamError::TooManyRows { .. },
            ) => Failure::Data(e.into()),
            trainer::FitError::Params(_) => Failure::Usage(e.into()),
            trainer::FitError::Data(_) => Failure::Data(e.into()),
            trainer::FitError::Internal(_) => Failure::Internal(e.into()),
        }
    }
}

/// A registry error classified by who can fix it: a request the store refused (4xx: unknown
/// version, nothing to roll back, bad token, a model file it will not take) or settings that
/// cannot work is the caller's, a usage error (exit 2); a store that cannot be reached, fails
/// (5xx) or answers nonsense is an I/O failure (exit 1), worth retrying later.
impl From<trainer::registry::RegistryError> for Failure {
    fn from(e: trainer::registry::RegistryError) -> Self {
        if e.is_refused_request() {
            Failure::Usage(e.into())
        } else {
            Failure::Internal(e.into())
        }
    }
}

/// Classifies the error of a step by what the step is.
pub trait Classify<T> {
    /// A usage error (exit 2).
    fn usage(self) -> Result<T, Failure>;
    /// A data error (exit 3).
    fn data(self) -> Result<T, Failure>;
    /// An internal failure (exit 1).
    fn internal(self) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> Classify<T> for Result<T, E> {
    fn usage(self) -> Result<T, Failure> {
        self.map_err(|e| Failure::Usage(e.into()))
    }
    fn data(self) -> Result<T, Failure> {
        self.map_err(|e| Failure::Data(e.into()))
    }
    fn internal(self) -> Result<T, Failure> {
        self.map_err(|e| Failure::Internal(e.into()))
    }
}
