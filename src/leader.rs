//! Leader election on a `coordination.k8s.io` Lease: every replica serves webhooks, only the
//! holder of the lease reconciles and admits, so no two processes ever decide at once.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// Why holding the lease could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{0}")]
    Api(kube::Error),
    #[error("the API server did not answer in time")]
    TimedOut,
}

/// Name of the Lease the replicas compete for.
pub const LEASE_NAME: &str = "raibid-operator-leader";

pub struct LeaderElection {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
}

/// Whether the lease as read lets `identity` take or keep it at `now`.
pub fn may_hold(spec: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return true;
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    renewed.is_none_or(|renewed| {
        renewed
            .checked_add(duration)
            .is_ok_and(|expiry| expiry < now)
    })
}

impl LeaderElection {
    pub fn new(client: Client, namespace: &str, identity: String, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            identity,
            duration,
        }
    }

    /// Waits until this process holds the lease, then renews it in the background. The
    /// receiver turns `false` if the lease is lost; the process should then stop deciding.
    pub async fn acquire(self) -> watch::Receiver<bool> {
        let retry = self.duration / 3;
        loop {
            match self.try_hold().await {
                Ok(Some(_)) => break,
                Ok(None) => {}
                Err(error) => warn!(%error, "leader election: could not read or write the lease"),
            }
            tokio::time::sleep(retry).await;
        }
        info!(identity = %self.identity, "became the leader");
        let (tx, rx) = watch::channel(true);
        // Stop deciding well before another replica may take over: the lease runs from the
        // time written into it, and a renewal that hangs must not keep us leading.
        let renew_deadline = self.duration * 2 / 3;
        tokio::spawn(async move {
            let mut held_since = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(retry).await;
                match self.try_hold().await {
                    Ok(Some(written)) => held_since = written,
                    Ok(None) => break,
                    Err(error) => {
                        warn!(%error, "leader election: renewal failed");
                        if held_since.elapsed() >= renew_deadline {
                            break;
                        }
                    }
                }
            }
            warn!("lost the leader lease");
            let _ = tx.send(false);
        });
        rx
    }

    /// Takes or renews the lease if it is free, ours, or expired; `Some(when the renewal was
    /// written)` when it is ours. A concurrent writer makes the replace fail on its
    /// resourceVersion, so two processes never both succeed. An attempt that takes longer
    /// than a third of the lease is abandoned as failed.
    async fn try_hold(&self) -> Result<Option<tokio::time::Instant>, LeaseError> {
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(self.duration / 3, self.write_lease()).await {
            Ok(Ok(true)) => Ok(Some(started)),
            Ok(Ok(false)) => Ok(None),
            Ok(Err(error)) => Err(LeaseError::Api(error)),
            Err(_) => Err(LeaseError::TimedOut),
        }
    }

    async fn write_lease(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = self.duration.as_secs().max(1) as i32;
        match self.api.get_opt(LEASE_NAME).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                    Err(error) => Err(error),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                if !may_hold(&spec, &self.identity, now) {
                    return Ok(false);
                }
                let taking_over = spec.holder_identity.as_deref() != Some(self.identity.as_str());
                lease.spec = Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: if taking_over {
                        Some(MicroTime(now))
                    } else {
                        spec.acquire_time.clone()
                    },
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(
                        spec.lease_transitions.unwrap_or(0) + i32::from(taking_over),
                    ),
                    ..spec
                });
                match self
                    .api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                    Err(error) => Err(error),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_taken_when_free_ours_or_expired() {
        assert!(may_hold(&LeaseSpec::default(), "me", at(0)));
        assert!(may_hold(&held_by("me", 0), "me", at(1)));
        assert!(
            !may_hold(&held_by("other", 0), "me", at(10)),
            "the other holder renewed 10s ago"
        );
        assert!(
            !may_hold(&held_by("other", 0), "me", at(15)),
            "not before it expires"
        );
        assert!(may_hold(&held_by("other", 0), "me", at(16)));
        assert!(may_hold(&held_by("", 0), "me", at(1)), "released");
    }
}
