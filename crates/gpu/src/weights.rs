//! Device copies of a model's constants, shared by the GPU plans of all its
//! input shapes.
//!
//! A model served at several shapes (dynamic batch, images of several
//! sizes) gets one [`GpuPlan`](crate::GpuPlan) per shape set, each from its
//! own typed and decluttered graph. Their weights are the same tensors, so a
//! plan built with a model's [`Weights`] binds the buffers an earlier plan
//! uploaded instead of uploading (and reserving memory for) them again.
//!
//! A constant is matched on its type, shape and bytes, compared in full (the
//! hash only narrows the candidates), so a plan never binds another
//! tensor's buffer. The store holds its buffers weakly: a weight is freed,
//! and its memory reservation returned, when the last plan using it is
//! dropped. Buffers of a lost device are never matched.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tract_onnx::prelude::Tensor;

use crate::device::Reservation;

/// One constant on the device.
pub(crate) struct Resident {
    pub(crate) buffer: wgpu::Buffer,
    /// The host tensor, to confirm a match byte for byte.
    tensor: Arc<Tensor>,
    generation: u64,
    _memory: Reservation,
}

/// The constants one model's GPU plans have on the device. Cheap to create;
/// share one per model (per graph) among the plans of its shapes.
#[derive(Default)]
pub struct Weights {
    entries: Mutex<HashMap<u64, Vec<Weak<Resident>>>>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("resident", &self.resident_bytes())
            .finish()
    }
}

/// Bytes a constant takes on the device (an empty tensor binds 4).
pub(crate) fn device_bytes(tensor: &Tensor) -> u64 {
    (tensor.as_bytes().len() as u64).max(4)
}

/// A hash of a tensor's type, shape and a sample of its bytes: enough to
/// narrow the candidates, cheap for gigabytes of weights.
fn key(tensor: &Tensor) -> u64 {
    const WINDOW: usize = 64;
    const SAMPLES: usize = 64;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tensor.datum_type().hash(&mut h);
    tensor.shape().hash(&mut h);
    let bytes = tensor.as_bytes();
    if bytes.len() <= WINDOW * SAMPLES {
        bytes.hash(&mut h);
    } else {
        let stride = (bytes.len() - WINDOW) / (SAMPLES - 1);
        for i in 0..SAMPLES {
            bytes[i * stride..i * stride + WINDOW].hash(&mut h);
        }
    }
    h.finish()
}

/// The store, locked for one plan's uploads: concurrent builds of a model's
/// other shapes wait rather than upload the same weights twice.
pub(crate) struct Locked<'a> {
    entries: MutexGuard<'a, HashMap<u64, Vec<Weak<Resident>>>>,
    generation: u64,
}

impl Weights {
    pub fn new() -> Weights {
        Weights::default()
    }

    /// Bytes of constants on the device that some plan still uses.
    pub fn resident_bytes(&self) -> u64 {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .values()
            .flatten()
            .filter_map(Weak::upgrade)
            .map(|r| device_bytes(&r.tensor))
            .sum()
    }

    pub(crate) fn lock(&self, generation: u64) -> Locked<'_> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, list| {
            list.retain(|w| w.strong_count() > 0);
            !list.is_empty()
        });
        Locked {
            entries,
            generation,
        }
    }
}

impl Locked<'_> {
    /// The resident copy of `tensor` on this device, if a plan has one.
    pub(crate) fn find(&self, tensor: &Arc<Tensor>) -> Option<Arc<Resident>> {
        self.entries
            .get(&key(tensor))?
            .iter()
            .filter_map(Weak::upgrade)
            .find(|r| {
                r.generation == self.generation
                    && (Arc::ptr_eq(&r.tensor, tensor)
                        || (r.tensor.datum_type() == tensor.datum_type()
                            && r.tensor.shape() == tensor.shape()
                            && r.tensor.as_bytes() == tensor.as_bytes()))
            })
    }

    /// Record a buffer just uploaded for `tensor`, holding `memory`.
    pub(crate) fn insert(
        &mut self,
        tensor: Arc<Tensor>,
        buffer: wgpu::Buffer,
        memory: Reservation,
    ) -> Arc<Resident> {
        let resident = Arc::new(Resident {
            buffer,
            tensor,
            generation: self.generation,
            _memory: memory,
        });
        self.entries
            .entry(key(&resident.tensor))
            .or_default()
            .push(Arc::downgrade(&resident));
        resident
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::tensor1;

    #[test]
    fn keys_tell_apart_type_shape_and_bytes_sampled_or_not() {
        let a = tensor1(&[1.0f32, 2.0, 3.0, 4.0]);
        let b = tensor1(&[1.0f32, 2.0, 3.0, 5.0]);
        let c = a.clone().into_shape(&[2, 2]).unwrap();
        let d = tensor1(&[1i32, 2, 3, 4]);
        assert_eq!(key(&a), key(&a.clone()));
        assert_ne!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
        assert_ne!(key(&a), key(&d));
        // Past the sampled size, a change inside the first window shows.
        let big: Vec<f32> = (0..100_000).map(|i| i as f32).collect();
        let mut other = big.clone();
        other[3] = -1.0;
        assert_eq!(key(&tensor1(&big)), key(&tensor1(&big.clone())));
        assert_ne!(key(&tensor1(&big)), key(&tensor1(&other)));
    }
}
