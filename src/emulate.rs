//! `emulate-device`.
use crate::app::AppError;
use crate::cli::EmulateArgs;
/// Run.
pub fn run(_a: EmulateArgs) -> Result<u8, AppError> {
    Err(AppError::Failed("emulate-device: not built yet".into()))
}
