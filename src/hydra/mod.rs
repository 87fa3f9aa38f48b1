//! A client for the JSON API of a Hydra CI server, and the types of its answers.
//!
//! [`HydraClient`] makes the few requests a channel release needs, always with
//! `Accept: application/json` (without it Hydra answers with HTML):
//!
//! | method | request |
//! |---|---|
//! | [`HydraClient::latest_finished`] | `GET HYDRA/job/PROJECT/JOBSET/JOB/latest-finished` (302 to `/build/ID`) |
//! | [`HydraClient::build`] | `GET HYDRA/build/ID` |
//! | [`HydraClient::eval`] | `GET HYDRA/eval/ID` |
//! | [`HydraClient::eval_store_paths`] | `GET HYDRA/eval/ID/store-paths` |
//! | [`HydraClient::eval_job`] | `GET HYDRA/eval/ID/job/NAME` (302 to `/build/ID`) |
//!
//! The answers are parsed leniently, because Hydra's JSON has changed over the years and comes
//! from Perl: booleans may be `0`/`1`, numbers may be strings, most fields may be `null` or
//! missing (`drvpath`, `flake` and `timestamp` are newer than 2017), keys come in any order and
//! unknown keys are ignored. Only the ids are required. What is then *used* is checked strictly
//! by the accessors ([`Build::release_name`], [`Build::eval_id`],
//! [`BuildProduct::store_path_and_inner`], [`BuildProduct::sha256`],
//! [`Eval::nixpkgs_revision`], ...), whose errors name the URL the value came from and the field,
//! e.g. ``https://hydra.nixos.org/eval/123: field `jobsetevalinputs.nixpkgs.revision` is missing``.
//!
//! The module is in layers:
//! - `api`: the answers as types ([`Build`], [`BuildProduct`], [`BuildOutput`], [`Eval`],
//!   [`EvalInput`]) and [`parse_store_paths`]; pure parsing and checking, bytes in and values
//!   out, with the field readers of `lenient` that accept every shape Hydra has written;
//! - `client`: [`HydraClient`], the requests, their size limits ([`MAX_JSON_SIZE`],
//!   [`MAX_STORE_PATHS_SIZE`]) and the checks of request names ([`check_name`]);
//! - `error`: [`HydraError`], shared by both.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use nixipfs::fetch::{FetchConfig, Fetcher};
//! use nixipfs::hydra::HydraClient;
//!
//! let hydra = HydraClient::new(Fetcher::new(FetchConfig::default())?, "https://hydra.nixos.org/");
//! let build = hydra.latest_finished("nixos", "release-24.11", "tested").await?;
//! let eval = hydra.eval(build.eval_id()?).await?;
//! println!("{} is nixpkgs {}", build.release_name()?, eval.nixpkgs_revision()?);
//! if let Some(channel) = hydra.eval_job(eval.id, "nixos.channel").await? {
//!     let tarball = channel.product_by_subtype("source-dist").ok_or("no tarball")?;
//!     let (store_path, inner) = tarball.store_path_and_inner()?;
//!     println!("{} is {inner} in {store_path}, sha256 {}", tarball.file_name()?, tarball.sha256()?);
//! }
//! # Ok(()) }
//! ```

mod api;
mod client;
mod error;
mod lenient;

pub use api::{parse_store_paths, Build, BuildOutput, BuildProduct, Eval, EvalInput};
pub use client::{check_name, HydraClient, MAX_JSON_SIZE, MAX_STORE_PATHS_SIZE};
pub use error::HydraError;
