/// The messages that carry plaintexts, data keys or tokens. They are wiped when dropped, their
/// `Debug` shows no secret, and the server wipes the buffer their answers were encoded in.
/// (Included by `build.rs` too.)
pub const SECRET_MESSAGES: [&str; 5] = [
    "EncryptRequest",
    "DecryptResponse",
    "GenerateDataKeyResponse",
    "ModelKey",
    "CreatedToken",
];
