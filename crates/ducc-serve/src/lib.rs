//! `ducc serve`: converts container images when their registry says they were pushed.
//!
//! A [`Service`] listens for the CNCF distribution registry's notifications
//! (`POST /notify/distribution`) and Harbor's webhook (`POST /notify/harbor`), checks their
//! bearer token ([`Auth`]) and size, matches each tag push against the wish list as
//! `ducc convert` does (tag globs included), and queues the images it names in a bounded
//! [`Queue`] with one entry per image. One worker converts them through a [`Backend`], and runs a
//! full pass over the wish list at start and every interval, so pushes missed while serve was
//! down are caught up. Failures are logged, counted, shown and retried with backoff.
//! `GET /healthz`, `GET /status` (JSON, or HTML for a browser) and `GET /metrics` (Prometheus)
//! show what it does.
//!
//! The crate never prints and never exits: the CLI installs the signal handlers that set
//! [`Signals`] and implements [`Backend`] over the conversion engine.
//!
//! ```
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use ducc_convert::Outcome;
//! use ducc_serve::{Auth, Backend, Config, ConversionFailure, Done, ImageReport, Service, Signals,
//!                  Target, Token};
//! use ducc_wishlist::{Wish, WishList};
//!
//! /// Converts nothing: every image is up to date.
//! struct UpToDate;
//! impl Backend for UpToDate {
//!     fn expand(&self, list: &WishList, wish: &Wish) -> Result<Vec<Target>, ConversionFailure> {
//!         Ok(vec![Target::new(wish.input.clone(), wish.output.clone())])
//!     }
//!     fn convert(&self, _: &WishList, _: &Target, _: &AtomicBool) -> ImageReport {
//!         Ok(Done::new(vec![Outcome::UpToDate], 0))
//!     }
//! }
//!
//! let list = WishList::from_yaml(
//!     "wish.yaml".as_ref(),
//!     "version: 1\ncvmfs_repo: unpacked.test\ninput: ['http://127.0.0.1:5000/app:1.*']\n",
//! )?;
//! let token = Token::new("s3cret", "DUCC_WEBHOOK_TOKEN")?;
//! let config = Config::new("wish.yaml".as_ref(), "127.0.0.1:0".parse()?, Auth::Bearer(token));
//! let signals = Signals::default();
//! let service = Service::bind(config, list, UpToDate, signals.clone())?;
//! assert!(service.local_addr().ip().is_loopback());
//! // What SIGTERM does: the service stops accepting and `run` returns.
//! signals.stop.store(true, Ordering::SeqCst);
//! service.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod auth;
mod backend;
mod event;
mod http;
mod matching;
mod metrics;
mod queue;
mod service;
mod status;

pub use auth::{Auth, Token, TokenError};
pub use backend::{
    Backend, Conversion, ConversionFailure, Done, EngineBackend, ImageReport, Session,
};
pub use event::{EnvelopeError, Event, SkipReason, Source, parse_distribution, parse_harbor};
pub use http::BODY_LIMIT;
pub use matching::{Target, wished_target};
pub use metrics::{EventOutcome, Metrics};
pub use queue::{Entry, Pushed, Queue, Trigger};
pub use service::{Config, ServeError, Service, Signals};
