//! The ducc conversion engine.
#![forbid(unsafe_code)]

mod bug;
mod cache;
mod engine;
mod error;
mod events;
mod image;
mod pull;
mod settings;

pub use cache::BlobCache;
pub use engine::{Engine, EngineBuilder, ImageResult, Outcome, StopToken};
pub use error::{ConvertError, ErrorKind, ImageFailure, Step};
pub use events::{DownloadObserver, EndStatus, Event, EventSink, NoEvents, Sinks};
pub use pull::{PullTarget, pull_image};
pub use settings::Settings;
