//! The client's API methods, by area. Each builds one request ([`crate::call`]) and reads its
//! answer; the transport is the client's business.

mod data;
mod keys;
mod model;
mod signing;
mod tokens;

#[cfg(test)]
pub(crate) use model::model_key_name;
