//! The REST handlers, by area. Each authenticates ([`crate::extract::Authed`]), reads its
//! request with field-path errors, and calls the service's operation; the pipeline does the
//! rest.

pub(crate) mod admin;
pub(crate) mod data;
pub(crate) mod keys;
pub(crate) mod signing;

#[cfg(test)]
mod tests;
