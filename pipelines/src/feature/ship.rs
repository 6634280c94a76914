//! Shipping commits to an object store (`[storage] object_store`): after
//! each commit (and every few seconds, for the registries beside the
//! tables) the data directory's new files go up, the manifest last
//! ([`twinflow_sinks::Shipper`]). A failure is kept for `/v1/status` and
//! tried again: commits never wait for the object store.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use twinflow_schemas::api::ShippingStatus;
use twinflow_sinks::{Shipper, Store};

use crate::failure::{Context, Failure};

/// How often the directory is looked at without a commit (registries, evaluations).
const EVERY: Duration = Duration::from_secs(2);

/// A primary's shipper and where it stands.
#[derive(Debug)]
pub struct Shipping {
    shipper: Shipper,
    status: Mutex<ShippingStatus>,
}

impl Shipping {
    /// Ships `store`'s directory to `url` from now on: a thread wakes at each
    /// commit (and every 2 s) until `stop` is dropped.
    pub fn start(
        url: &str,
        options: &std::collections::BTreeMap<String, String>,
        store: &Arc<Store>,
        stop: crossbeam_channel::Receiver<()>,
    ) -> Result<(Arc<Shipping>, std::thread::JoinHandle<()>), Failure> {
        let remote = twinflow_sinks::Remote::open(url, options).context("cannot open the object store")?;
        let shipper = Shipper::new(remote, store.data_dir()).with_context(|| format!("cannot list {url}"))?;
        let shipping = Arc::new(Shipping {
            shipper,
            status: Mutex::new(ShippingStatus { url: url.to_owned(), ..Default::default() }),
        });
        let (commits, committed) = crossbeam_channel::bounded::<()>(1);
        store.on_commit(Arc::new(move |_| {
            let _ = commits.try_send(());
        }));
        let running = shipping.clone();
        let thread = std::thread::Builder::new()
            .name("twinflow-ship".into())
            .spawn(move || {
                loop {
                    running.ship();
                    crossbeam_channel::select! {
                        recv(committed) -> _ => {}
                        recv(stop) -> _ => return,
                        default(EVERY) => {}
                    }
                }
            })
            .context("cannot start the shipping thread")?;
        Ok((shipping, thread))
    }

    /// Ships what changed now.
    pub fn ship(&self) {
        let result = self.shipper.ship();
        let mut status = self.status.lock();
        match result {
            Ok(shipped) => {
                status.files += shipped.files as u64;
                status.bytes += shipped.bytes;
                if shipped.epoch.is_some() {
                    status.shipped_epoch = shipped.epoch;
                }
                status.last_error = None;
            }
            Err(e) => {
                if status.last_error.is_none() {
                    tracing::warn!(url = %status.url, error = %e, "could not ship commits to the object store; retrying");
                }
                status.last_error = Some(e.to_string());
            }
        }
    }

    /// Where it stands.
    pub fn status(&self) -> ShippingStatus {
        self.status.lock().clone()
    }
}
