//! `listen`.
use crate::app::AppError;
use crate::cli::ListenArgs;
/// Run.
pub fn run(_a: ListenArgs) -> Result<u8, AppError> {
    Err(AppError::Failed("listen: not built yet".into()))
}
