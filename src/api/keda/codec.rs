//! The gRPC codec of the KEDA service: prost's, with a small encode buffer. tonic gives every
//! response body an encode buffer of its default 8 KiB for as long as the body lives, and a
//! `StreamIsActive` stream lives as long as its ScaledObject: 10,000 of them held 80 MB of
//! buffers for messages of a few bytes. The buffer grows when a message needs more.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial encode buffer of a response body: larger than every message this service sends
/// (a `GetMetricsResponse` of one value is under 100 bytes).
pub const ENCODE_BUFFER_BYTES: usize = 256;

/// Encoded bytes a streaming body gathers before it yields to the connection: tonic's default.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost's encoding with an encode buffer of [`ENCODE_BUFFER_BYTES`]; named by `build.rs` as
/// the generated service's and client's codec.
#[derive(Debug, Clone)]
pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        SmallBuffers(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(ENCODE_BUFFER_BYTES, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}
