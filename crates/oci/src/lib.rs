//! `weft-oci`: the model-module artifact format and the local content store.
//!
//! A model module is one OCI image manifest (see `docs/artifact-format.md`):
//! a wasm config carrying the model interface, the module as an
//! `application/wasm` layer, weights and files as CNCF ModelPack layers.
//! [`Store`] is the OCI image layout directory every Weft program shares;
//! [`artifact::build`] packages a module into it and [`Artifact::open`]
//! reads one back.
//!
//! ```no_run
//! let store = weft_oci::Store::open("/tmp/weft-store")?;
//! for (reference, desc) in store.list()? {
//!     println!("{reference} {}", desc.digest());
//! }
//! # Ok::<(), weft_oci::OciError>(())
//! ```
//!
//! Architecture invariant: nothing here runs wasm or models; the CLI fills
//! the interface from `weft-nn`.

pub mod artifact;
mod error;
pub mod package;
pub mod registry;
mod store;

pub use artifact::{Artifact, Package};
pub use error::OciError;
pub use oci_client::secrets::RegistryAuth;
pub use oci_spec::image::{Descriptor, Digest, ImageManifest, MediaType};
pub use registry::{
    Progress, Remote, RemoteOptions, TransferReport, docker_auth, names_registry, parse_reference,
};
pub use store::{GcReport, MAX_METADATA, Store, WriteGuard, normalize_reference};
pub use weft_format::media;
