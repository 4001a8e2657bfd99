//! One pack for identical concurrent requests (single flight).
//!
//! Sixteen CI jobs that post the same archive at once would decode and pack it sixteen times,
//! then queue on the key lock to find it stored. Requests are identical when they carry the
//! same upload (its SHA-256, known once the upload is spooled), for the same function and
//! effective key prefix, with the same selection and `dry_run`: then their packages are the same
//! bytes under the same key. The first such request in a replica leads: it publishes as usual.
//! The others follow: they wait for the leader's answer and answer as a re-post would
//! (`uploaded: false`), without a worker, a decode or a pack of their own.
//!
//! A leader whose input is refused (a bad archive, a path, a limit) hands that refusal to its
//! followers: their input is the same bytes with the same options, so it would be refused
//! again. A leader that fails otherwise (the store, the pool), or goes away (its client
//! disconnected, the request timed out: its future is dropped), lands nothing: its followers
//! board again, the first of them leads with its own upload, and the others follow it. So a
//! cancelled leader costs its followers a wait, never its error. A flight is removed from the map when its leader finishes,
//! either way, and the map holds at most [`MAX_FLIGHTS`]: beyond, a request publishes alone, as
//! before single flight.
//!
//! Git requests do not share: their key would be the commit, which is only known after the
//! fetch that a shared flight would save.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::Error;
use super::publish::{Input, Outcome, PublishRequest, Published};
use crate::package::Sha256Hex;
use crate::source::Selection;
use crate::store::key::{FunctionName, KeyPrefix};

/// Most flights in progress at once in a replica (each is a few hundred bytes; the pool and
/// the concurrency limit bound the requests behind them long before this).
pub(super) const MAX_FLIGHTS: usize = 4096;

/// What makes two requests identical: their packages are the same bytes under the same key,
/// and a dry run is answered as a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct FlightKey {
    function: FunctionName,
    prefix: KeyPrefix,
    source_sha256: Sha256Hex,
    selection: Selection,
    dry_run: bool,
}

impl FlightKey {
    /// The key of an archive request (`None` for git and directory input, which do not share).
    pub(super) fn of(request: &PublishRequest, prefix: &KeyPrefix) -> Option<Self> {
        let (Input::Archive(_), Some(source_sha256)) = (&request.input, request.source_sha256) else {
            return None;
        };
        Some(Self {
            function: request.function.clone(),
            prefix: prefix.clone(),
            source_sha256,
            selection: request.selection.clone(),
            dry_run: request.dry_run,
        })
    }
}

/// Where a flight is.
#[derive(Debug, Clone)]
pub(super) enum Landing {
    /// The leader is still at work.
    Flying,
    /// The leader published this.
    Landed(Box<Published>),
    /// The leader's input was refused: the same input is refused for every follower.
    Refused(Arc<Error>),
    /// The leader failed otherwise (the store, the pool) or went away: followers board again.
    Crashed,
}

/// How many packs this replica ran, and how many requests waited for another's instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackCounts {
    /// Decodes and packs actually run (also the metric `packs_total`).
    pub packs: u64,
    /// Requests that waited for an identical request's pack (also `packs_shared_total`).
    pub shared: u64,
}

/// The flights in progress, and the counts.
#[derive(Debug, Default)]
pub(super) struct Flights {
    map: Mutex<HashMap<FlightKey, Arc<watch::Sender<Landing>>>>,
    packs: AtomicU64,
    shared: AtomicU64,
}

/// A request's place in a flight.
pub(super) enum Seat<'a> {
    /// The first: publish, then [`Pilot::land`].
    Leader(Pilot<'a>),
    /// Wait for the leader with [`Flights::wait`].
    Follower(watch::Receiver<Landing>),
    /// No room for another flight: publish alone.
    Alone,
}

impl Flights {
    /// Joins the flight of `key`, or starts it.
    pub(super) fn board(&self, key: &FlightKey) -> Seat<'_> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = map.get(key) {
            self.shared.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("packs_shared_total").increment(1);
            return Seat::Follower(flight.subscribe());
        }
        if map.len() >= MAX_FLIGHTS {
            return Seat::Alone;
        }
        let flight = Arc::new(watch::channel(Landing::Flying).0);
        map.insert(key.clone(), Arc::clone(&flight));
        Seat::Leader(Pilot { flights: self, key: key.clone(), flight, landed: false })
    }

    /// The leader's package, answered as a re-post of it would be, or its refusal of the
    /// input; `None` if the leader failed otherwise or went away (board again).
    pub(super) async fn wait(mut follower: watch::Receiver<Landing>) -> Option<Result<Published, Error>> {
        let landing = follower.wait_for(|l| !matches!(l, Landing::Flying)).await.ok()?.clone();
        let published = match landing {
            Landing::Landed(published) => published,
            Landing::Refused(error) => return Some(Err(Error::Shared(error))),
            Landing::Flying | Landing::Crashed => return None,
        };
        let mut published = *published;
        if published.outcome == Outcome::Created {
            // Stored by the leader: for this request, it already existed.
            published.outcome = Outcome::AlreadyExisted;
            metrics::counter!("packages_deduplicated_total").increment(1);
        }
        Some(Ok(published))
    }

    /// Counts a decode and pack that actually runs.
    pub(super) fn count_pack(&self, format: &'static str) {
        self.packs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("packs_total", "format" => format).increment(1);
    }

    /// The counts so far.
    pub(super) fn counts(&self) -> PackCounts {
        PackCounts { packs: self.packs.load(Ordering::Relaxed), shared: self.shared.load(Ordering::Relaxed) }
    }

    /// Flights in progress.
    pub(super) fn in_progress(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The leader's seat. Dropped without [`land`](Self::land) (an error, or the request's future
/// dropped), it tells the followers to board again.
pub(super) struct Pilot<'a> {
    flights: &'a Flights,
    key: FlightKey,
    flight: Arc<watch::Sender<Landing>>,
    landed: bool,
}

impl Pilot<'_> {
    /// Hands the leader's result to the followers: its package, or the refusal of its input
    /// (which the leader answers too, shared). Any other failure lets them board again.
    pub(super) fn land(mut self, result: Result<Published, Error>) -> Result<Published, Error> {
        match result {
            Ok(published) => {
                self.flight.send_replace(Landing::Landed(Box::new(published.clone())));
                self.landed = true;
                Ok(published)
            }
            Err(error) if error.is_input_error() => {
                let error = Arc::new(error);
                self.flight.send_replace(Landing::Refused(Arc::clone(&error)));
                self.landed = true;
                Err(Error::Shared(error))
            }
            Err(error) => Err(error),
        }
    }
}

impl Drop for Pilot<'_> {
    fn drop(&mut self) {
        // Out of the map first, so that followers woken by a crash start a new flight instead
        // of finding this one.
        let mut map = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) {
            map.remove(&self.key);
        }
        drop(map);
        if !self.landed {
            self.flight.send_replace(Landing::Crashed);
        }
    }
}
