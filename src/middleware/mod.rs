//! The request path's stages, in order: parse -> triage -> decide (policy) ->
//! dispatch (with fallbacks) -> meter. Each is a plain function the chat
//! handler calls; per-request state is passed as typed values.

pub mod dispatch;
pub mod meter;
pub mod parse;
pub mod shadow;
pub mod triage;
