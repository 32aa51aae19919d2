//! The gRPC codec of the generated client and server: prost's wire format, written into a
//! buffer reserved at the message's encoded size first.
//!
//! tonic's stock prost codec lets its buffer grow while a message is written. Growing moves what
//! was already written to a new allocation and frees the old one without wiping it, so a
//! message with a data key or a plaintext could leave a copy behind in freed memory. With the
//! room reserved first, the message is written once, in place. The buffer itself belongs to
//! tonic; the server wipes it after the answer is sent (`hanzo-kms-server`, `grpc/audited.rs`).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// Encodes `T`, decodes `U`.
#[derive(Debug)]
pub struct SizedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SizedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SizedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Reserves the message's size, then writes it.
#[derive(Debug)]
pub struct SizedEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding the message: {e}")))
    }
}
