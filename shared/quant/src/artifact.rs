//! Writing the artifact file (docs/ARTIFACT.md), and handing its tensors to libtorch. The frame's
//! layout, its constants and the reader are pgolf-evaluator's, so writer and reader share one
//! definition of the format.

use anyhow::Result;
use serde_json::Value;
#[cfg(feature = "torch")]
use tch::{Device, Tensor};

use crate::chunks::compress_chunked;
use crate::compress::Compression;
use crate::container::encode_body;
use crate::encoded::StoredTensor;
pub use pgolf_evaluator::artifact::{Artifact, DecodedTensor, FRAME_BYTES, FRAME_VERSION, MAGIC};

/// Encodes an artifact into file bytes.
pub fn encode_artifact(
    config: &Value,
    tensors: &[StoredTensor],
    compression: &Compression,
) -> Result<Vec<u8>> {
    encode_frame(&encode_body(config, tensors)?, compression)
}

/// An artifact file holding `body` as it is (the frame, then the compressed chunks): the
/// writing half of [`Artifact::from_bytes`], also for fuzzing the reader with bodies that no
/// encoder would write.
pub fn encode_frame(body: &[u8], compression: &Compression) -> Result<Vec<u8>> {
    let stream = compress_chunked(compression, body)?;
    let mut out = Vec::with_capacity(FRAME_BYTES + stream.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[
        FRAME_VERSION,
        compression.codec.id(),
        compression.stride(),
        0,
    ]);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&(stream.len() as u64).to_le_bytes());
    out.extend_from_slice(blake3::hash(body).as_bytes());
    out.extend_from_slice(&stream);
    Ok(out)
}

/// [`Artifact`]'s tensors as libtorch tensors.
#[cfg(feature = "torch")]
pub trait ToTch {
    /// Name → tensor on `device`, each in its original dtype (ready for `VarStore` loading).
    fn to_tch(&self, device: Device) -> Result<Vec<(String, Tensor)>>;
}

#[cfg(feature = "torch")]
impl ToTch for Artifact {
    fn to_tch(&self, device: Device) -> Result<Vec<(String, Tensor)>> {
        self.decode_all()?
            .into_iter()
            .map(|d| {
                let shape: Vec<i64> = d.shape.iter().map(|s| *s as i64).collect();
                let t = Tensor::f_from_slice(&d.data)?
                    .f_view(shape.as_slice())?
                    .f_to_kind(crate::dtype::to_kind(d.dtype))?
                    .f_to_device(device)?;
                Ok((d.name, t))
            })
            .collect()
    }
}
